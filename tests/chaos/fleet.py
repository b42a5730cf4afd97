"""A fleet streaming pings at a running engine through faults, as a careful client does: every
batch is sent again until it is acked (UNAVAILABLE and RESOURCE_EXHAUSTED are retried), and the
oracle sees every attempt (the engine may have logged part of a failed one)."""

import random
import threading
import time
from collections import Counter

import grpc

from engine.timeutil import DAY_MS
from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from tests.oracle import Oracle
from tests.workload import POINTS

RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


class Fleet(threading.Thread):
    """`devices` devices, a batch of `batch` pings every `period_s`, until `stop()`. Keeps the
    status code of every call and the times of the calls that failed."""

    def __init__(self, port: int, key: str, devices: int = 300, batch: int = 100,
                 period_s: float = 0.1, seed: int = 1, oracle: Oracle | None = None,
                 own_connection: bool = False):  # fmt: skip
        super().__init__(daemon=True)
        # own_connection: a TCP connection no other channel of this process shares (gRPC
        # shares one between channels to the same address), so that it reaches a handler of
        # its own on the shared port
        options = [("grpc.use_local_subchannel_pool", 1)] if own_connection else []
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
        self.stub = pbg.IngestServiceStub(self.channel)
        self.auth = [("authorization", f"Bearer {key}")]
        self.devices = [f"chaos-{seed}-{i}" for i in range(devices)]
        self.batch, self.period_s = batch, period_s
        self.rng = random.Random(seed)
        # shared by the fleets of one engine: the engine counts them all
        self.oracle = oracle or Oracle(9, ttl_ms=120_000, max_skew_ms=30_000, max_age_ms=7 * DAY_MS)
        self.codes: Counter = Counter()
        self.failed_at: list[float] = []  # monotonic times of calls that were not acked
        self.acked_at: list[float] = []
        self.acked = 0
        self.acked_pings: list[tuple[str, int]] = []  # (device, ts) of every acked ping
        self._stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self._send_until_acked(self._pings())
                self._stopping.wait(max(0.0, self.period_s - (time.monotonic() - started)))
        except BaseException as exc:  # seen by the test through `stop()`
            self.error = exc

    def _pings(self) -> list[pb.Ping]:
        now = int(time.time() * 1000)
        out = []
        for device in self.rng.sample(self.devices, self.batch):
            lat, lng = self.rng.choice(POINTS)
            out.append(pb.Ping(device_id=device, ts_ms=now, lat=lat, lng=lng))
        return out

    def _send_until_acked(self, pings: list[pb.Ping]) -> None:
        while True:
            now = int(time.time() * 1000)
            for p in pings:
                self.oracle.ping(now, p.device_id, p.ts_ms, p.lat, p.lng)
            try:
                ack = self.stub.SendPings(
                    pb.SendPingsRequest(pings=pings), metadata=self.auth, timeout=20
                )
            except grpc.RpcError as exc:
                self.codes[exc.code().name] += 1
                self.failed_at.append(time.monotonic())
                if exc.code() not in RETRIED:
                    raise
                time.sleep(0.1)
                continue
            self.codes["OK"] += 1
            self.acked += ack.accepted + ack.late
            rejected = {r.index for r in ack.rejections}
            self.acked_pings += [
                (p.device_id, p.ts_ms) for i, p in enumerate(pings) if i not in rejected
            ]
            self.acked_at.append(time.monotonic())
            return

    def acked_since(self, t: float) -> bool:
        return any(a > t for a in self.acked_at)

    def await_ack_after(self, t: float, timeout_s: float = 30) -> bool:
        """Whether a batch is acked after monotonic time `t`, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self.acked_since(t) and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.acked_since(t)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=60)
        self.channel.close()
        assert self.error is None, repr(self.error)
