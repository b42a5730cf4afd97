"""The benchmark's peers do the job they stand for: after the same batches, their live counts
per cell are each device's latest cell, as the engine's would be (no expiry within the test)."""

import sys
import time
from pathlib import Path

import pytest

from engine.cells import cell_of
from protos.occupancy.v1 import occupancy_pb2 as pb
from state.redis_server import EmbeddedRedis

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from peers import RES, TTL_MS, ChdbCounts, RedisCounts, floor_counts

pytestmark = pytest.mark.integration


def _dwell(batches: list[bytes]) -> dict[str, dict[int, int]]:
    """Each device's dwell as both peers define it: each ping to its next, per cell."""
    pings = [p for b in batches for p in pb.SendPingsRequest.FromString(b).pings]
    out: dict[str, dict[int, int]] = {}
    last: dict[str, tuple[int, int]] = {}
    for p in pings:
        if p.device_id in last:
            ts, cell = last[p.device_id]
            cells = out.setdefault(p.device_id, {})
            cells[cell] = cells.get(cell, 0) + min(p.ts_ms - ts, TTL_MS)
        last[p.device_id] = (p.ts_ms, cell_of(p.lat, p.lng, RES))
    return out


def _batches() -> tuple[list[bytes], dict[int, int], int]:
    """Three rounds of 50 devices over a few cells; some devices change cell between rounds."""
    now = int(time.time() * 1000)
    latest: dict[str, int] = {}
    batches = []
    for r in range(3):
        pings = []
        for i in range(50):
            lat, lng = 52.66 + (i % 7) * 0.004, -8.63 + ((i + r * (i % 3)) % 5) * 0.006
            pings.append(
                pb.Ping(device_id=f"p-{i}", ts_ms=now - 30_000 + r * 1_000, lat=lat, lng=lng)
            )
            latest[f"p-{i}"] = cell_of(lat, lng, RES)
        batches.append(pb.SendPingsRequest(pings=pings).SerializeToString())
    expected: dict[int, int] = {}
    for cell in latest.values():
        expected[cell] = expected.get(cell, 0) + 1
    return batches, expected, 150


def test_redis_peer_counts_each_device_in_its_latest_cell(tmp_path):
    batches, expected, _ = _batches()
    server = EmbeddedRedis(tmp_path)
    try:
        peer = RedisCounts(server.start())
        for b in batches:
            peer.ingest(b)
        assert peer.heatmap() == expected
        top = peer.top(3)
        assert [n for _, n in top] == sorted(expected.values(), reverse=True)[:3]
        assert all(expected[c] == n for c, n in top)
        assert peer.expire() == 0  # nobody has been silent for the TTL yet
        for device, cells in _dwell(batches).items():
            assert peer.dwell(device) == cells, device
    finally:
        server.stop()


def test_clickhouse_peer_counts_each_device_in_its_latest_cell(tmp_path):
    batches, expected, _ = _batches()
    peer = ChdbCounts(tmp_path / "ch")
    try:
        for b in batches:
            peer.ingest(b)
        assert peer.heatmap() == expected
        cell, n = peer.top(1)[0]
        assert n == max(expected.values()) and expected[cell] == n
        assert all(peer.count(c) == k for c, k in expected.items())
        for device, cells in _dwell(batches).items():
            assert peer.dwell(device) == cells, device
    finally:
        peer.db.close()


def test_floor_counts_every_ping():
    batches, _, total = _batches()
    n, counts = floor_counts(batches)
    assert n == total == sum(counts.values())
