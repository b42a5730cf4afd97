"""Webhooks end to end: `occupancy up` in a subprocess, a real HTTP receiver on loopback that
refuses the first deliveries and is down across a restart of the engine; pings drive devices
into and out of a space and its count across a threshold. After dropping copies by event id,
the receiver holds exactly the enters and exits the oracle finds in the ping log and the
crossings of the oracle's counts, each signed with the hook's secret."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import orjson
import pytest
import requests

from engine.hooks import verify
from engine.pseudonym import pseudonym_str
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from state.id_directory import IdDirectory
from tests.chaos.processes import embedded_redis
from tests.engine_process import EngineProcess
from tests.oracle import Oracle

pytestmark = pytest.mark.integration

TTL_S = 600  # no presence runs out during the test: every exit is a ping elsewhere
SETTINGS = {
    "OCC_CHECKPOINT_INTERVAL_S": "1",
    "OCC_HTTP_INGRESS": "proxy",  # HAProxy's fixed stats ports would meet another engine's
    "OCC_PRESENCE_TTL_S": str(TTL_S),
    "OCC_HOOK_BACKOFF_BASE_S": "0.05",  # a refused delivery is tried again within a second
    "OCC_HOOK_BACKOFF_CAP_S": "0.5",
}
SECRET = "a-secret-of-the-receiver-0123"
THRESHOLD = 2
IN, OUT = (52.400, -8.450), (52.500, -8.450)
LOBBY = {
    "type": "Polygon",
    "coordinates": [
        [[-8.455, 52.397], [-8.445, 52.397], [-8.445, 52.403], [-8.455, 52.403], [-8.455, 52.397]]
    ],
}
WAIT_S = 90  # the longest any bounded wait below may take


class Receiver(ThreadingHTTPServer):
    """Answers 503 to the first `refuse` deliveries and to all while `down`; keeps the rest."""

    def __init__(self, refuse: int):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.refuse, self.down, self.refused = refuse, False, 0
        self.got: list[dict] = []
        self.bad_signatures = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def unique(self) -> dict[str, dict]:
        with self.lock:
            return {e["id"]: e for e in self.got}


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        server: Receiver = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with server.lock:
            refused = server.down or server.refused < server.refuse
            if refused:
                server.refused += 1
            else:
                if not verify(SECRET, body, self.headers.get("X-Occupancy-Signature", "")):
                    server.bad_signatures += 1
                server.got.append(orjson.loads(body))
        self.send_response(503 if refused else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _until(what, check, wait_s: float = WAIT_S):
    """`check()` once it is truthy, polling; after `wait_s`, its last answer."""
    deadline = time.monotonic() + wait_s
    while not (found := check()) and time.monotonic() < deadline:
        time.sleep(0.25)
    return found


class Driver:
    """Pings over gRPC to one engine; the oracle sees each one."""

    def __init__(self, engine: EngineProcess, oracle: Oracle):
        self.engine, self.oracle = engine, oracle

    def api(self, method: str, path: str, body=None) -> requests.Response:
        return requests.request(
            method,
            f"http://127.0.0.1:{self.engine.http_port}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.engine.admin}"},
            timeout=60,
        )

    def ping(self, devices: list[str], where: tuple[float, float]) -> None:
        now = int(time.time() * 1000)
        pings = [pb.Ping(device_id=d, ts_ms=now, lat=where[0], lng=where[1]) for d in devices]
        with grpc.insecure_channel(f"127.0.0.1:{self.engine.grpc_port}") as channel:
            ack = pbg.IngestServiceStub(channel).SendPings(
                pb.SendPingsRequest(pings=pings),
                metadata=[("authorization", f"Bearer {self.engine.keys['ingest']}")],
                timeout=60,
            )
        assert ack.accepted == len(pings), ack
        for d in devices:
            self.oracle.ping(now, d, now, *where)

    def count(self) -> int:
        return self.api("GET", "/v1/spaces/lobby").json()["count"]

    def pending(self) -> int:
        return self.api("GET", "/v1/hooks").json()["hooks"][0]["pending"]


def _membership(oracle: Oracle, keys: dict[str, str], now: int) -> set[tuple]:
    """(event, device's pseudonym, ts) of every enter and exit of the lobby in the ping log:
    the starts and ends of the devices' stays in its cells, stays that touch joined."""
    cells, out = oracle.space_cells("lobby"), set()
    for device, key in keys.items():
        runs: list[list[int]] = []
        for start, end, cell in oracle.intervals(device, now):
            if cell not in cells:
                continue
            if runs and runs[-1][1] == start:
                runs[-1][1] = end
            else:
                runs.append([start, end])
        for start, end in runs:
            out.add(("enter", key, start))
            if end <= now:
                out.add(("exit", key, end))
    return out


def test_every_event_once_after_dedupe_across_refusals_and_a_restart(tmp_path: Path):
    receiver = Receiver(refuse=3)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    oracle = Oracle(res=9, ttl_ms=TTL_S * 1000, max_skew_ms=30_000, max_age_ms=7 * 86_400_000)
    oracle.define_polygon_space("lobby", LOBBY)
    devices = ["d0", "d1", "d2", "d3"]
    stable: list[int] = []  # a moment of each phase, its count held for several evaluations

    def settle(drive: Driver, n: int) -> None:
        assert _until(f"count {n}", lambda: drive.count() == n)
        stable.append(int(time.time() * 1000))

    engine = EngineProcess(tmp_path, **SETTINGS)
    try:
        drive = Driver(engine, oracle)
        assert drive.api("PUT", "/v1/spaces/lobby", {"polygon": LOBBY}).status_code == 200
        hook = {
            "url": receiver.url,
            "secret": SECRET,
            "spaces": ["lobby"],
            "events": ["enter", "exit", "above", "below"],
            "threshold": THRESHOLD,
        }
        r = drive.api("PUT", "/v1/hooks/h1", hook)
        assert r.status_code == 200 and r.json()["secret"] == "set", r.text
        drive.ping(devices[:3], IN)  # 3 enters; 3 > 2: above
        settle(drive, 3)
        assert _until(
            "above", lambda: any(e["event"] == "above" for e in receiver.unique().values())
        )
        drive.ping(devices[:2], OUT)  # 2 exits; 1: below
        settle(drive, 1)
        assert _until(
            "below", lambda: any(e["event"] == "below" for e in receiver.unique().values())
        )
        assert receiver.refused >= 3  # the first deliveries were refused, and tried again
        receiver.down = True
        drive.ping(["d3", "d0"], IN)  # 2 enters; 3: above, while the receiver is down
        settle(drive, 3)
        assert _until("above in the outbox", lambda: drive.pending() >= 3)
    finally:
        engine.stop()

    engine = EngineProcess(tmp_path, **SETTINGS)  # the same data dir
    try:
        drive = Driver(engine, oracle)
        listed = drive.api("GET", "/v1/hooks").json()["hooks"]
        assert [(h["hook"], h["status"], h["secret"]) for h in listed] == [("h1", "failing", "set")]
        receiver.down = False
        drive.ping(["d3"], OUT)  # an exit; 2: below
        settle(drive, 2)
        assert _until("the outbox empty", lambda: drive.pending() == 0)
        now = int(time.time() * 1000)
        keys = {d: pseudonym_str(IdDirectory(embedded_redis(tmp_path / "data")).lookup(d))
                for d in devices}  # fmt: skip
        expected = _membership(oracle, keys, now)
        _until("the events", lambda: len(receiver.unique()) >= len(expected) + 4, wait_s=30)
        events = receiver.unique()
        got = {(e["event"], e["device"], e["ts"]) for e in events.values() if "device" in e}
        assert got == expected, (sorted(events.values(), key=lambda e: e["ts"]), keys)
        assert all(e["hook"] == "h1" and e["space"] == "lobby" for e in events.values())
        levels = sorted((e for e in events.values() if "count" in e), key=lambda e: e["ts"])
        counts = [oracle.space_occupancy("lobby", t, now) for t in stable]
        assert counts == [3, 1, 3, 2]
        sides = [False] + [n > THRESHOLD for n in counts]
        crossings = [
            ("above" if sides[i + 1] else "below", n)
            for i, n in enumerate(counts)
            if sides[i + 1] != sides[i]
        ]
        assert [(e["event"], e["count"]) for e in levels] == crossings
        assert all(e["threshold"] == THRESHOLD for e in levels)
        assert receiver.bad_signatures == 0
        # copies are the same event: the same body under the same id
        with receiver.lock:
            for e in receiver.got:
                assert events[e["id"]] == e
        listed = drive.api("GET", "/v1/hooks").json()["hooks"]
        assert listed[0]["status"] == "active" and listed[0]["pending"] == 0
        assert drive.api("DELETE", "/v1/hooks/h1").json() == {"hook": "h1", "deleted": True}
        assert drive.api("GET", "/v1/hooks").json() == {"hooks": []}
    finally:
        engine.stop()
        receiver.shutdown()
