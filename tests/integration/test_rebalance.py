"""Rebalancing shards while a fleet streams: no device lost, none counted twice."""

import json
import os
import random
import re
import signal
import threading
import time

import grpc
import pytest
import ray
import requests
from click.testing import CliRunner

from cluster import fit
from cluster.rebalance import STEPS, Quiet, RebalanceError, check_scale, rebalance
from occupancy.cli import main
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from state import layout as layouts
from state.layout import committed
from tests.integration.checks import agree, assert_live_equals_oracle, random_pings
from tests.workload import _rect

FAR_SPACE = {"type": "Polygon", "coordinates": [_rect(10.0, 10.0, 10.01, 10.012)]}

pytestmark = pytest.mark.integration


class Fleet:
    """Sends random batches (fresh, stale, late and duplicate pings) over gRPC from
    `senders` threads, each with its own pool of devices, until stopped; every batch must be
    acked."""

    def __init__(self, live, seed: int, senders: int = 3):
        self.live = live
        self.batches = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(seed * 10 + i,), daemon=True)
            for i in range(senders)
        ]

    def __enter__(self) -> "Fleet":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        channel = grpc.insecure_channel(f"127.0.0.1:{self.live.engine.grpc_port}")
        stub = pbg.IngestServiceStub(channel)  # a connection of its own: to any handler
        try:
            while not self._stop.is_set():
                now = int(time.time() * 1000)
                n = rng.randint(20, 150)
                self.live.send(random_pings(rng, f"fleet{seed}", 600, now)[:n], stub=stub)
                self.batches += 1
                time.sleep(rng.uniform(0, 0.02))
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            channel.close()

    def wait_batches(self, n: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        start = self.batches
        while self.batches < start + n and not self.errors:
            assert time.monotonic() < deadline, "the fleet stalled"
            time.sleep(0.05)


def _post_scale(live, **counts) -> requests.Response:
    return requests.post(
        f"{live.http}/v1/admin/scale",
        json=counts,
        headers={"Authorization": f"Bearer {live.admin}"},
        timeout=60,
    )


def _status(live) -> dict:
    r = requests.get(
        f"{live.http}/v1/admin/status",
        headers={"Authorization": f"Bearer {live.admin}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _await_scale(live, accepted: dict, seen: list | None = None) -> dict:
    """The status's `rebalance` record once the scale `accepted` no longer runs (`seen`
    collects every record polled)."""
    deadline = time.monotonic() + 300
    while True:
        record = _status(live)["rebalance"]
        assert record["id"] == accepted["id"], record
        if seen is not None:
            seen.append(record)
        if record["state"] != "running":
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.5)


def _scale(live, **counts) -> dict:
    """A scale as an operator runs it: accepted (202), then waited for until done. What it did
    (the record's `result`: version, counts, devices moved, shards retired...)."""
    r = _post_scale(live, **counts)
    assert r.status_code == 202, r.text
    record = _await_scale(live, r.json())
    assert record["state"] == "done", record
    return record["result"]


def _scale_while_streaming(live, seed: int, **counts) -> dict:
    """`_scale` in the middle of a fleet's stream, every batch of which is acked."""
    with Fleet(live, seed=seed) as fleet:
        fleet.wait_batches(20)
        out = _scale(live, **counts)
        fleet.wait_batches(20)
    assert not fleet.errors, fleet.errors
    return out


def _await_metric_layout(live, version: int) -> None:
    """/metrics reports `version` as the committed layout, and no pending one."""
    deadline = time.monotonic() + 30
    while True:
        text = requests.get(f"{live.http}/metrics", timeout=10).text
        states = dict(
            re.findall(r'occupancy_layout_version\{[^}]*state="(\w+)"[^}]*\} (\S+)', text)
        )
        if {k: float(v) for k, v in states.items()} == {"committed": version}:
            return
        assert time.monotonic() < deadline, states
        time.sleep(1)


def _devices(live, family: str) -> dict[str, int]:
    return {
        s["shard"]: s["devices"]
        for s in live.q(live.queries.shard_stats())
        if s["shard"].startswith(family)
    }


def test_rebalance_from_two_to_three_shards_and_back_while_a_fleet_streams(spaces):
    live = spaces
    before = committed(live.engine.client())
    version = before["version"] if before else 0
    grown = _scale_while_streaming(live, 31, user_shards=3, cell_shards=3)
    assert grown["version"] == version + 1
    assert (grown["user_shards"], grown["cell_shards"]) == (3, 3)
    assert sum(n for moved in grown["moved"].values() for n in moved.values()) > 0
    assert committed(live.engine.client())["user_shards"] == ["user-0", "user-1", "user-2"]
    live.queries.refresh()
    assert_live_equals_oracle(live)
    _await_metric_layout(live, version + 1)
    users, cells = _devices(live, "user-"), _devices(live, "cell-")
    assert set(users) == {"user-0", "user-1", "user-2"} and users["user-2"] > 0
    assert set(cells) == {"cell-0", "cell-1", "cell-2"} and cells["cell-2"] > 0

    shrunk = _scale_while_streaming(live, 32, user_shards=2, cell_shards=2)
    assert shrunk["version"] == version + 2
    assert sorted(shrunk["retired"]) == ["cell-2", "user-2"]
    live.queries.refresh()
    assert_live_equals_oracle(live)
    assert set(_devices(live, "user-")) == {"user-0", "user-1"}
    with pytest.raises(ValueError):
        ray.get_actor("user-2", namespace=live.engine.topology.namespace)


def test_a_scale_is_accepted_at_once_and_its_steps_show_in_the_status(spaces):
    """202 with the target version while the rebalance still has to run; the status shows
    it running (or already done) towards that version, step after step, then done."""
    live = spaces
    client = live.engine.client()
    version = layouts.current(live.engine.topology, client).version
    r = _post_scale(live, user_shards=3, cell_shards=3)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == "/v1/admin/status"
    accepted = r.json()
    assert accepted == {
        "id": accepted["id"], "state": "running", "target_version": version + 1,
        "user_shards": 3, "cell_shards": 3, "ingest_handlers": None,
    }  # fmt: skip
    seen: list[dict] = []
    done = _await_scale(live, accepted, seen)
    assert seen[0]["state"] in ("running", "done")
    assert all(r["target_version"] == version + 1 for r in seen)
    assert all(r["step"] in (None, *STEPS) for r in seen), seen
    assert [r["done"] for r in seen] == sorted(r["done"] for r in seen)
    assert done["state"] == "done" and done["done"] == done["total"] == len(STEPS)
    assert done["error"] is None and done["finished_at"] >= done["started_at"]
    result = done["result"]
    assert (result["version"], result["user_shards"], result["cell_shards"]) == (version + 1, 3, 3)
    assert done["shards_handed_off"] == 2  # the user shards of the layout it left
    assert done["devices_moved"] == sum(n for m in result["moved"].values() for n in m.values())
    status = _status(live)
    assert status["layout"]["version"] == version + 1 and "pending_layout" not in status
    assert committed(client)["version"] == version + 1
    live.queries.refresh()
    assert_live_equals_oracle(live)
    _scale(live, user_shards=2, cell_shards=2)


class _Gate(Quiet):
    """Progress that holds a rebalance run from this process at `step` until opened."""

    def __init__(self, step: str):
        self.at = step
        self.reached = threading.Event()
        self.opened = threading.Event()

    def step(self, name: str) -> None:
        if name == self.at:
            self.reached.set()
            self.opened.wait(300)


def test_a_scale_is_refused_while_another_rebalance_runs(spaces):
    live = spaces
    version = layouts.current(live.engine.topology, live.engine.client()).version
    gate = _Gate("handoff")
    done: dict = {}
    runner = threading.Thread(
        target=lambda: done.update(rebalance(live.engine.topology, 3, 2, gate)), daemon=True
    )
    runner.start()
    try:
        assert gate.reached.wait(120), "the rebalance did not reach its handoff"
        for counts in (
            {"user_shards": 4},
            {"user_shards": 3, "cell_shards": 2},
            {"ingest_handlers": 3},
        ):
            r = _post_scale(live, **counts)
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] == "rebalance_conflict"
            assert "under way" in r.json()["error"]["message"]
    finally:
        gate.opened.set()
        runner.join(120)
    assert done["version"] == version + 1
    assert _scale(live, user_shards=2, cell_shards=2)["version"] == version + 2
    live.queries.refresh()
    assert_live_equals_oracle(live)


def test_a_scale_that_fails_in_the_background_shows_it_and_running_it_again_finishes_it(spaces):
    live = spaces
    ns = live.engine.topology.namespace
    version = layouts.current(live.engine.topology, live.engine.client()).version

    @ray.remote(num_cpus=0)
    class BrokenShard:
        """Holds the name the new user shard takes, and fails when asked whether it runs."""

        def pid(self):
            raise RuntimeError("user-2 could not start")

    broken = BrokenShard.options(name="user-2", namespace=ns).remote()
    r = _post_scale(live, user_shards=3, cell_shards=3)
    assert r.status_code == 202, r.text
    failed = _await_scale(live, r.json())
    assert failed["state"] == "failed", failed
    assert failed["error"] == "RuntimeError: user-2 could not start"
    assert (failed["step"], failed["done"]) == ("start user shards", 2)
    status = _status(live)
    assert status["layout"]["version"] == version
    assert status["pending_layout"]["user_shards"] == ["user-0", "user-1", "user-2"]
    other = _post_scale(live, user_shards=4, cell_shards=2)  # not while that one is unfinished
    assert other.status_code == 409 and "did not finish" in other.json()["error"]["message"]

    ray.kill(broken, no_restart=True)
    deadline = time.monotonic() + 60
    while True:  # the name is free once Ray has removed the actor
        try:
            ray.get_actor("user-2", namespace=ns)
        except ValueError:
            break
        assert time.monotonic() < deadline, "user-2 was not removed"
        time.sleep(0.2)
    with Fleet(live, seed=36) as fleet:
        fleet.wait_batches(20)
        again = _post_scale(live, user_shards=3, cell_shards=3)
        assert again.status_code == 202, again.text
        assert again.json()["target_version"] == version + 1
        finished = _await_scale(live, again.json())
        fleet.wait_batches(20)
    assert not fleet.errors, fleet.errors
    assert finished["state"] == "done", finished
    assert finished["result"]["version"] == version + 1
    assert "pending_layout" not in _status(live)
    live.queries.refresh()
    assert_live_equals_oracle(live)
    _scale(live, user_shards=2, cell_shards=2)


def test_the_cli_scale_waits_and_prints_each_step(spaces):
    live = spaces
    version = layouts.current(live.engine.topology, live.engine.client()).version
    api = ["--url", live.http, "--key", live.admin]
    runner = CliRunner()
    out = runner.invoke(main, ["scale", "--user-shards", "3", "--cell-shards", "2", *api])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == f"scaling to layout {version + 1}: 3 user and 2 cell shards", lines
    assert f"layout {version + 1}: now 3 user and 2 cell shards" in lines
    steps = [re.fullmatch(r"\[(\d)/8\] ([a-z ]+)( \(.*\))?", ln) for ln in lines if ln[0] == "["]
    assert all(m is not None and m.group(2) in STEPS for m in steps), lines
    status = runner.invoke(main, ["status", *api])
    assert f"last scale (to layout {version + 1}: 3 user and 2 cell shards" in status.output
    assert "): done at" in status.output, status.output
    back = runner.invoke(main, ["scale", "--user-shards", "2", "--no-wait", *api])
    assert back.exit_code == 0, back.output
    assert _await_scale(live, json.loads(back.output))["state"] == "done"
    live.queries.refresh()
    assert_live_equals_oracle(live)


def test_an_interrupted_rebalance_is_finished_by_running_it_again(spaces, monkeypatch):
    live = spaces
    client = live.engine.client()
    version = layouts.current(live.engine.topology, client).version

    def crash(*_):
        raise RuntimeError("the coordinator died before the commit")

    with Fleet(live, seed=34) as fleet:
        fleet.wait_batches(20)
        with monkeypatch.context() as m:
            m.setattr(layouts, "commit", crash)
            with pytest.raises(RuntimeError):
                rebalance(live.engine.topology, 3, 3)
        assert committed(client)["version"] == version  # devices moved, layout not committed
        assert layouts.pending(client)["user_shards"] == ["user-0", "user-1", "user-2"]
        with pytest.raises(RebalanceError):  # another rebalance must not start meanwhile
            rebalance(live.engine.topology, 4, 2)
        # a space defined meanwhile reaches the new shard too: devices that shard owns count
        # (far from the other tests' devices, so no dwell of theirs changes)
        live.engine.define_polygon_space("sp-mid-rebalance", FAR_SPACE)
        live.oracle.define_polygon_space("sp-mid-rebalance", FAR_SPACE)
        finished = rebalance(live.engine.topology, 3, 3)
        now = int(time.time() * 1000)
        live.send([pb.Ping(device_id=f"mid-rebalance-{i}", ts_ms=now, lat=10.005, lng=10.006)
                   for i in range(30)])  # fmt: skip
        fleet.wait_batches(20)
    assert not fleet.errors, fleet.errors
    assert finished["version"] == version + 1 and layouts.pending(client) is None
    live.queries.refresh()
    assert_live_equals_oracle(live)
    agree(
        lambda: live.q(live.queries.space_count("sp-mid-rebalance")),
        lambda t: live.oracle.space_occupancy("sp-mid-rebalance", t, t),
        "a space defined during the rebalance",
    )
    assert _scale(live, user_shards=2, cell_shards=2)["version"] == version + 2
    live.queries.refresh()
    assert_live_equals_oracle(live)


def test_shards_killed_after_the_handoff_come_back_with_what_they_gave_and_took(
    spaces, monkeypatch
):
    """The old owner replays its handoff from its log (the devices stay gone), the new owner
    its adoption (the devices stay there): SIGKILL both between the handoff and the commit."""
    live = spaces
    ns = live.engine.topology.namespace
    commit = layouts.commit
    killed = []

    def kill_then_commit(client, goal):
        for name in ("user-0", "user-2"):
            handle = ray.get_actor(name, namespace=ns)
            pid = ray.get(handle.pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append((handle, pid))
        commit(client, goal)

    with Fleet(live, seed=35) as fleet:
        fleet.wait_batches(20)
        with monkeypatch.context() as m:
            m.setattr(layouts, "commit", kill_then_commit)
            grown = rebalance(live.engine.topology, 3, 2)
        fleet.wait_batches(20)
    assert not fleet.errors, fleet.errors
    assert sum(n for moved in grown["moved"].values() for n in moved.values()) > 0
    for handle, pid in killed:
        assert ray.get(handle.pid.remote(), timeout=60) != pid
    live.queries.refresh()
    assert_live_equals_oracle(live)
    _scale(live, user_shards=2, cell_shards=2)
    live.queries.refresh()
    assert_live_equals_oracle(live)


def test_ingest_handlers_are_added_and_taken_away_on_the_shared_port(spaces):
    live = spaces
    ns = live.engine.topology.namespace
    out = _scale(live, ingest_handlers=3)
    assert out == {"ingest_handlers": 3, "port": live.engine.grpc_port}
    third = ray.get_actor("ingest-2", namespace=ns)
    assert ray.get(third.bound_port.remote()) == live.engine.grpc_port
    with Fleet(live, seed=33, senders=4) as fleet:  # four connections, spread over handlers
        fleet.wait_batches(30)
        assert _scale(live, ingest_handlers=2)["ingest_handlers"] == 2
        fleet.wait_batches(30)
    assert not fleet.errors, fleet.errors
    with pytest.raises(ValueError):
        ray.get_actor("ingest-2", namespace=ns)
    assert_live_equals_oracle(live)


def test_scale_asks_for_an_admin_key_and_sane_counts(live):
    r = requests.post(
        f"{live.http}/v1/admin/scale",
        json={"user_shards": 3},
        headers={"Authorization": f"Bearer {live.viewer}"},
        timeout=30,
    )
    assert r.status_code == 403
    r = requests.post(
        f"{live.http}/v1/admin/scale",
        json={"user_shards": 0},
        headers={"Authorization": f"Bearer {live.admin}"},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    r = requests.post(
        f"{live.http}/v1/admin/scale",
        json={},
        headers={"Authorization": f"Bearer {live.admin}"},
        timeout=30,
    )
    assert r.status_code == 400 and "user_shards" in r.json()["error"]["message"]
    assert _scale(live, user_shards=2, cell_shards=2)["changed"] is False


def test_a_scale_whose_actors_would_not_fit_is_refused_before_anything_starts(live, monkeypatch):
    t = live.engine.topology
    now = layouts.current(t, live.engine.client())
    assert fit.available_bytes() > 256 * 2**20  # what the machine has, measured by a task
    check_scale(t, len(now.user_shards), len(now.cell_shards), None)  # nothing to start
    monkeypatch.setattr(fit, "available_bytes", lambda: 512 * 2**20)
    handlers = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("ingest-")
    ]
    with pytest.raises(fit.DoesNotFit) as refused:
        check_scale(t, len(now.user_shards) + 4, None, len(handlers) + 2)
    message = str(refused.value)
    assert "4 user shards × " in message and "2 ingest handlers × " in message, message
