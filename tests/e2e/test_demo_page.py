"""`occupancy demo` as a user runs it, and its live page in headless Chromium: hexagons appear,
the counts the page shows are the API's, the time slider switches to history."""

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.browser import chromium
from tests.engine_process import ROOT, engine_env

pytestmark = pytest.mark.integration


class Demo:
    """The demo subprocess, its output read line by line in the background."""

    def __init__(self, env: dict, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "occupancy.cli", "demo", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self._new.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        for line in list(self.lines):
            if m := re.search(pattern, line):
                return m
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, "".join(self.lines)
                continue
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{''.join(self.lines)}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=90)
        return "".join(self.lines)


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _shown(driver) -> dict:
    """What the page shows: its query (res, bbox, time), top list and space counters."""
    return driver.execute_script(
        """
        const d = document.body.dataset;
        return {
          res: d.res, bbox: d.bbox, asOf: d.asOf, mode: d.mode,
          refreshes: Number(d.refreshes), hexagons: Number(d.hexagons),
          top: [...document.querySelectorAll('#top li')].map(
            li => [li.dataset.cell, Number(li.dataset.count)]),
          spaces: Object.fromEntries([...document.querySelectorAll('#spaces tbody tr')].map(
            tr => [tr.dataset.space, Number(tr.dataset.count)])),
          status: document.getElementById('status').textContent,
          transport: d.transport, streamEvents: Number(d.streamEvents || 0),
        };
        """
    )


def _chart(driver) -> dict:
    """The chart of the selected space: the query it answers and the counts it draws."""
    return driver.execute_script(
        r"""
        const c = document.getElementById('chart');
        const d = c.dataset;
        const numbers = (s) => s ? s.split(',').map(Number) : [];
        const line = c.querySelector('polyline');
        return {
          space: d.space || null, from: d.from, to: d.to, tz: d.tz,
          counts: numbers(d.counts), starts: numbers(d.starts),
          line: line ? line.getAttribute('points').trim().split(/\s+/).length : 0,
        };
        """
    )


def _paths(driver) -> dict:
    """The paths layer: how many it draws, the query they answer, its error."""
    return driver.execute_script(
        """
        const d = document.body.dataset;
        return {count: Number(d.paths || 0), query: d.pathsQuery, error: d.pathsError || ''};
        """
    )


def _settled(driver) -> dict:
    """The page's state after two more refreshes (each is one set of answers)."""
    before = _shown(driver)["refreshes"]
    _wait(lambda: _shown(driver)["refreshes"] >= before + 2, 30, "two page refreshes")
    return _shown(driver)


def test_demo_page_shows_the_live_heatmap_and_history(tmp_path, artifacts):
    env, _, http_port = engine_env(tmp_path, OCC_SNAPSHOT_INTERVAL_S="2")
    demo = Demo(env, "--devices", "600", "--duration", "25")
    driver = None
    try:
        url = demo.wait_for(r"live page\s+(http://\S+)", 180).group(1)
        assert url.startswith(f"http://127.0.0.1:{http_port}/#key=occ_viewer_")
        key = url.split("#key=")[1]
        api = f"http://127.0.0.1:{http_port}"
        headers = {"Authorization": f"Bearer {key}"}

        driver = chromium(tmp_path / "chromium")
        driver.get(url)
        _wait(lambda: _shown(driver)["hexagons"] > 0, 60, "hexagons on the page")
        assert "#key=" not in driver.current_url  # the key leaves the address bar
        shown = _settled(driver)
        assert shown["mode"] == "live" and shown["top"] and shown["spaces"]
        # live counts come by the stream (/v1/stream), not by polling
        assert shown["transport"] == "stream" and shown["streamEvents"] > 0
        driver.save_screenshot(str(artifacts / "demo-live.png"))

        # the fleet stops; live counts hold still until the presence TTL
        demo.wait_for(r"simulation finished", 90)
        shown = _settled(driver)
        params = {"res": shown["res"], "bbox": shown["bbox"]}
        top = requests.get(f"{api}/v1/top", params={**params, "n": 10}, headers=headers, timeout=10)
        assert shown["top"] == [[c["cell"], c["count"]] for c in top.json()["cells"]]
        heat = requests.get(f"{api}/v1/heatmap", params=params, headers=headers, timeout=10)
        assert shown["hexagons"] == len(heat.json()["cells"])
        spaces = requests.get(f"{api}/v1/spaces", headers=headers, timeout=10).json()["spaces"]
        assert shown["spaces"] == {s["space"]: s["count"] for s in spaces}
        assert shown["spaces"]["district-centre"] > 0 and shown["spaces"]["mall"] > 0
        assert sum(c for _, c in shown["top"]) > 0

        # a space picked in the list: its last 24 hours as a chart, the API's series
        driver.find_element("css selector", '#spaces tr[data-space="mall"]').click()
        chart = _wait(
            lambda: (c := _chart(driver))["space"] == "mall" and c["counts"] and c,
            60,
            "the mall's chart",
        )
        series = requests.get(
            f"{api}/v1/series",
            params={"space": "mall", "step": "15m", "from": chart["from"], "to": chart["to"],
                    "tz": chart["tz"]},
            headers=headers,
            timeout=30,
        )  # fmt: skip
        assert series.status_code == 200, series.text
        points = series.json()["points"]
        assert chart["starts"] == [p["t"] for p in points]
        # every bucket but the current one is done; the current one may have grown since
        assert chart["counts"][:-1] == [p["count"] for p in points][:-1]
        assert max(chart["counts"]) > 0 and chart["line"] >= 2 * len(points)
        driver.save_screenshot(str(artifacts / "demo-chart.png"))

        # paths: a viewer's key is told they need an admin's; with one, the last hour's paths
        # in view are the API's (the fleet has stopped: history holds them all)
        driver.find_element("id", "paths").click()
        _wait(lambda: "admin key" in _paths(driver)["error"], 30, "the paths' refusal")
        admin = (Path(env["OCC_DATA_DIR"]) / "admin.key").read_text().strip()
        driver.find_element("id", "logout").click()
        driver.find_element("id", "key").send_keys(admin)
        driver.find_element("css selector", "#login-form button").click()
        drawn = _wait(
            lambda: (p := _paths(driver))["count"] and not p["error"] and p, 60, "paths drawn"
        )
        query = json.loads(drawn["query"])
        assert query["format"] == "geojson" and query["to"] - query["from"] == 3_600_000
        answer = requests.get(
            f"{api}/v1/history/paths",
            params=query,
            headers={"Authorization": f"Bearer {admin}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert drawn["count"] == len(answer.json()["features"]) > 0
        driver.save_screenshot(str(artifacts / "demo-paths.png"))

        # zooming in picks a finer resolution, down to the engine's own
        coarse = int(shown["res"])
        for _ in range(3):
            driver.find_element("id", "zoom-in").click()
        _wait(lambda: int(_shown(driver)["res"] or 0) > coarse, 30, "a finer resolution")
        assert int(_settled(driver)["res"]) <= 11  # the demo's base resolution

        # the time slider: a minute back, answered from history
        driver.execute_script(
            "const s = document.getElementById('time'); s.value = '-1';"
            "s.dispatchEvent(new Event('change'));"
        )
        _wait(lambda: _shown(driver)["mode"] == "history", 30, "history mode")
        shown = _wait(
            lambda: (s := _shown(driver))["status"].startswith("history") and s,
            30,
            "a history answer",
        )
        past = requests.get(
            f"{api}/v1/top",
            params={"res": shown["res"], "bbox": shown["bbox"], "n": 10, "at": shown["asOf"]},
            headers=headers,
            timeout=30,
        )
        assert past.status_code == 200, past.text
        assert shown["top"] == [[c["cell"], c["count"]] for c in past.json()["cells"]]
        assert int(shown["asOf"]) % 60_000 == 0
        driver.save_screenshot(str(artifacts / "demo-history.png"))
    finally:
        if driver is not None:
            driver.quit()
        output = demo.stop()
    assert demo.proc.returncode == 0, output
    assert "stopped" in output
