"""ClickHouse away under a streaming fleet, against `occupancy up`: ingest and live queries go on,
the backlog beyond its bound spills to files, `status` and history queries answer at once
(not behind a snapshot), and once the store is back every acked ping is archived exactly once."""

import time
from collections import Counter

import orjson
import pytest
import requests

from tests.chaos.fleet import Fleet
from tests.engine_process import EngineProcess

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = EngineProcess(
        tmp_path_factory.mktemp("chaos-clickhouse"),
        OCC_SNAPSHOT_INTERVAL_S="1",
        OCC_ARCHIVE_BACKLOG_MAX_MB="0.05",  # a few dozen batches: the outage spills
    )
    yield e
    e.stop()


def _call(engine: EngineProcess, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(
        method,
        f"http://127.0.0.1:{engine.http_port}{path}",
        headers={"authorization": f"Bearer {engine.admin}"},
        timeout=30,
        **kwargs,
    )


def _history(engine: EngineProcess) -> dict:
    r = _call(engine, "GET", "/v1/admin/status")
    assert r.status_code == 200, r.text
    return r.json()["history"]


def _archived(engine: EngineProcess) -> list[dict]:
    """Every raw ping in ClickHouse, from the admin export (devices as pseudonyms)."""
    r = _call(
        engine, "GET", "/v1/export",
        params={"what": "pings", "from": "0", "to": str(int(time.time() * 1000) + 60_000),
                "format": "json"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return [orjson.loads(line) for line in r.content.splitlines() if line]


def test_an_outage_spills_and_after_it_every_acked_ping_is_archived_once(engine):
    fleet = Fleet(engine.grpc_port, engine.keys["ingest"], seed=7)
    fleet.start()
    time.sleep(2)
    drill = _call(engine, "POST", "/v1/admin/archive", json={"outage_drill": True})
    assert drill.status_code == 200, drill.text
    began = time.monotonic()
    try:
        # ingest goes on; history's state says the store is down and the backlog spills
        while not _history(engine)["spill"]["ranges"]:
            assert time.monotonic() - began < 60, _history(engine)
            time.sleep(0.5)
        h = _history(engine)
        assert h["last_error"], h
        health = _call(engine, "GET", "/v1/health")
        assert health.status_code == 503 and health.json()["checks"]["clickhouse"].startswith(
            "error"
        )
        # a history query fails fast with the envelope, it does not wait behind the snapshots
        at = _call(engine, "GET", "/v1/heatmap", params={"bbox": "-180,-90,180,90", "at": 0})
        assert at.status_code == 503, at.text
        assert at.json()["error"]["code"] == "history_unavailable"
        assert fleet.acked_since(began)
    finally:
        _call(engine, "POST", "/v1/admin/archive", json={"outage_drill": False})
    ended = time.monotonic()
    time.sleep(1)
    fleet.stop()
    assert set(fleet.codes) == {"OK"}, fleet.codes  # ingest never noticed
    while True:
        h = _history(engine)
        if not h["last_error"] and not h["catching_up"] and not any(h["archive_lag_ms"].values()):
            break
        assert time.monotonic() - ended < 120, h
        time.sleep(0.5)
    assert h["spill"] == {"ranges": 0, "bytes": 0, "oldest_ms": 0}, h
    health = _call(engine, "GET", "/v1/health")
    assert health.status_code == 200, health.text
    archived = _archived(engine)
    # every acked ping once: none missing (a batch's pings share its time), none twice
    assert Counter(r["ts"] for r in archived) == Counter(ts for _, ts in fleet.acked_pings)
    positions = {(r["shard"], r["wal_ms"], r["wal_seq"], r["idx"]) for r in archived}
    assert len(positions) == len(archived) == len(fleet.acked_pings)
