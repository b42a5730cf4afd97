"""The long fuzz run: hostile HTTP requests and gRPC calls against `occupancy up`, counted.

The same generators as the property tests (`tests/hostile.py`), for as many examples as asked;
nothing stops at the first failure: every 5xx, crash (a connection reset or refused) and hang
(no answer within --timeout) is counted and the first few are printed. At the end the engine
must still be healthy and count a ping.

    .venv/bin/python bench/fuzz.py --examples 100000
"""

import argparse
import collections
import platform
import sys
import tempfile
import time
from pathlib import Path

import grpc
from hypothesis import HealthCheck, Phase, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the generators live in tests/

from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from tests import hostile
from tests.engine_process import EngineProcess


def _run(strategy, examples: int, one) -> None:
    if examples <= 0:
        return

    @settings(
        max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def loop(example):
        one(example)

    loop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="HTTP requests")
    parser.add_argument(
        "--grpc-examples", type=int, default=None, help="gRPC calls (default: as many)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a hang")
    args = parser.parse_args()
    grpc_examples = args.examples if args.grpc_examples is None else args.grpc_examples
    with tempfile.TemporaryDirectory() as tmp:
        engine = EngineProcess(Path(tmp))
        try:
            report(engine, args.examples, grpc_examples, args.timeout)
        finally:
            engine.stop()


def report(engine: EngineProcess, examples: int, grpc_examples: int, timeout: float) -> None:
    statuses: collections.Counter = collections.Counter()
    bad: collections.Counter = collections.Counter()
    shown: list[str] = []

    def note(kind: str, text: str) -> None:
        bad[kind] += 1
        if len(shown) < 10:
            shown.append(f"{kind}: {text[:400]}")

    def http_one(request) -> None:
        try:
            status, body = hostile.send("127.0.0.1", engine.http_port, request, timeout)
        except TimeoutError:
            note("hang", repr(request))
            return
        except OSError as exc:
            note("crash", f"{exc!r} {request!r}")
            return
        statuses[status] += 1
        if (problem := hostile.problem(request, status, body)) is not None:
            note("5xx" if status >= 500 else "no envelope", problem)

    started = time.monotonic()
    _run(hostile.requests_(engine.keys), examples, http_one)
    http_s = time.monotonic() - started

    codes: collections.Counter = collections.Counter()
    channel = grpc.insecure_channel(f"127.0.0.1:{engine.grpc_port}")
    now = int(time.time() * 1000)

    def grpc_one(call) -> None:
        method, data = call
        code = hostile.grpc_send(channel, engine.keys["ingest"], method, data)
        codes[code.name] += 1
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            note("hang", f"gRPC {method} {data[:100]!r}")
        elif code == grpc.StatusCode.UNAVAILABLE:
            note("crash", f"gRPC {method} {data[:100]!r}")
        elif code not in hostile.OK_CODES:
            note(f"gRPC {code.name}", f"{method} {data[:200]!r}")

    started = time.monotonic()
    _run(hostile.grpc_calls(now), grpc_examples, grpc_one)
    grpc_s = time.monotonic() - started

    healthy = engine.healthy()
    stub = pbg.IngestServiceStub(channel)
    ping = pb.Ping(device_id="fuzz-after", ts_ms=int(time.time() * 1000), lat=52.66, lng=-8.63)
    auth = [("authorization", f"Bearer {engine.keys['ingest']}")]
    counted = stub.SendPings(pb.SendPingsRequest(pings=[ping]), metadata=auth, timeout=30).accepted
    print(f"machine: {platform.node()} · {platform.processor() or platform.machine()}")
    print(f"date: {time.strftime('%Y-%m-%d')}")
    http = f"{sum(statuses.values()):,} requests in {http_s:.0f} s"
    print(f"HTTP: {http}; statuses {dict(sorted(statuses.items()))}")
    calls = f"{sum(codes.values()):,} calls in {grpc_s:.0f} s"
    print(f"gRPC: {calls}; codes {dict(sorted(codes.items()))}")
    print(f"5xx: {bad['5xx']}, errors without the envelope: {bad['no envelope']}, "
          f"crashes: {bad['crash']}, hangs: {bad['hang']}, other gRPC codes: "
          f"{sum(n for k, n in bad.items() if k.startswith('gRPC'))}")  # fmt: skip
    print(f"afterwards: health {'ok' if healthy else 'NOT ok'}, a new ping accepted: {counted}")
    for line in shown:
        print("  " + line)


if __name__ == "__main__":
    main()
