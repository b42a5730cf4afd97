"""Forgetting across restarts of `occupancy up` on one data dir: a device forgotten stays
forgotten (404 for its raw id and old pseudonym), the past counts stay, a new ping starts a new
pseudonym; a device forgotten while the engine was stopped is forgotten in full once it runs;
and with the engine stopped, neither the store nor Redis's checkpoints and logs hold either."""

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import grpc
import msgpack
import pytest
import redis
import requests

from clickhouse.backends import CHDB_SUBDIR, ChdbBackend
from clickhouse.store import HistoryStore
from engine.cells import cell_of, to_str
from engine.pseudonym import pseudonym_str
from engine.timeutil import minute_of
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from state import forgetting
from state.id_directory import IdDirectory
from state.redis_server import EmbeddedRedis
from tests.chaos.processes import embedded_redis
from tests.engine_process import ROOT, EngineProcess, engine_env
from tests.integration.test_forget import _traces_in_redis

pytestmark = pytest.mark.integration

# Serve's Python proxy: HAProxy's fixed stats ports would meet another engine's on this machine
SETTINGS = {
    "OCC_SNAPSHOT_INTERVAL_S": "1",
    "OCC_CHECKPOINT_INTERVAL_S": "1",
    "OCC_HTTP_INGRESS": "proxy",
}
PERSON, OTHER = "+15145550123", "+15145550199"
HERE = (52.400, -8.450)


def _call(e: EngineProcess, method: str, path: str, **params) -> requests.Response:
    return requests.request(
        method,
        f"http://127.0.0.1:{e.http_port}{path}",
        params=params,
        headers={"Authorization": f"Bearer {e.admin}"},
        timeout=120,
    )


def _send(e: EngineProcess, device: str, ts: list[int]) -> pb.SendPingsResponse:
    with grpc.insecure_channel(f"127.0.0.1:{e.grpc_port}") as channel:
        pings = [pb.Ping(device_id=device, ts_ms=t, lat=HERE[0], lng=HERE[1]) for t in ts]
        return pbg.IngestServiceStub(channel).SendPings(
            pb.SendPingsRequest(pings=pings),
            metadata=[("authorization", f"Bearer {e.keys['ingest']}")],
            timeout=60,
        )


def _in_history(e: EngineProcess, at: list[int], devices: int) -> dict[int, int]:
    """The count of HERE's cell at each of `at`, once history has them all at `devices`."""
    deadline = time.monotonic() + 120
    while True:
        counts = _cells_at(e, at)
        if set(counts.values()) == {devices}:
            return counts
        assert time.monotonic() < deadline, counts
        time.sleep(0.5)


def _redis(data: Path) -> redis.Redis:
    """A client of the data dir's embedded Redis, whichever process started it."""
    return embedded_redis(data)


def _cells_at(e: EngineProcess, times: list[int]) -> dict[int, int]:
    cell = to_str(cell_of(*HERE, 9))
    return {t: _call(e, "GET", f"/v1/cells/{cell}", at=t).json()["count"] for t in times}


def _unknown(e: EngineProcess, device: str) -> bool:
    r = _call(e, "GET", f"/v1/history/path/{quote(device, safe='')}", **{"from": 1, "to": 2})
    return r.status_code == 404 and r.json()["error"]["code"] == "unknown_device"


def test_forgotten_devices_stay_forgotten_across_restarts(tmp_path):
    now = int(time.time() * 1000)
    times = [now - back for back in (400_000, 300_000, 200_000)]
    first = EngineProcess(tmp_path, **SETTINGS)
    try:
        for device in (PERSON, OTHER):
            assert _send(first, device, times).accepted == len(times)
        at = [minute_of(t) + 30_000 for t in times]
        counts = _in_history(first, at, 2)
        ids = IdDirectory(_redis(tmp_path / "data"))
        old, other = ids.lookup(PERSON), ids.lookup(OTHER)
        r = _call(first, "DELETE", f"/v1/admin/devices/{quote(PERSON, safe='')}")
        assert r.json() == {"device_id": PERSON, "live": "done", "history": "done"}, r.text
        assert _unknown(first, PERSON) and _unknown(first, pseudonym_str(old))
    finally:
        first.stop()

    # forgotten while no engine runs: the id directory's step now, the rest at the next start
    env, _, _ = engine_env(tmp_path)
    offline = subprocess.run(
        [sys.executable, "-m", "occupancy.cli", "forget", OTHER],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    assert "forgotten in the id directory" in offline.stdout

    second = EngineProcess(tmp_path, **SETTINGS)
    try:
        client = _redis(tmp_path / "data")
        deadline = time.monotonic() + 120
        while client.hlen(forgetting.JOBS):  # the history actor finishes the offline forget
            assert time.monotonic() < deadline, "the offline forget was never finished"
            time.sleep(0.5)
        for device in (PERSON, OTHER, pseudonym_str(old), pseudonym_str(other)):
            assert _unknown(second, device), device
        assert _cells_at(second, at) == counts  # the past counts, after both forgets
        later = int(time.time() * 1000)
        assert _send(second, PERSON, [later]).accepted == 1  # a new device's first ping
        renewed = IdDirectory(client).lookup(PERSON)
        assert renewed not in (None, old)
        assert not _unknown(second, PERSON)
    finally:
        second.stop()

    # with the engine stopped: the store and Redis as they are on disk
    store = HistoryStore(ChdbBackend(tmp_path / "data" / CHDB_SUBDIR))
    try:
        for key in (old, other):
            assert store.device_rows(key) == {"raw_pings": 0, "presence": 0}
        assert store.cell_count(cell_of(*HERE, 9), at[0]) == 2
    finally:
        store.backend.close()
    server = EmbeddedRedis(tmp_path / "data")
    try:
        client = redis.Redis.from_url(server.start())
        for key in (old, other):
            assert _traces_in_redis(client, key) == []
        assert not [k for k in client.scan_iter() if OTHER.encode() in _dump(client, k)]
    finally:
        server.stop()


def _dump(client, key: bytes) -> bytes:
    """A key's name and contents as bytes, to search for a raw id."""
    kind = client.type(key).decode()
    if kind == "string":
        return key + (client.get(key) or b"")
    if kind == "hash":
        return key + b"".join(k + v for k, v in client.hgetall(key).items())
    if kind == "stream":
        return key + b"".join(
            msgpack.packb(list(fields.items())) for _, fields in client.xrange(key)
        )
    return key
