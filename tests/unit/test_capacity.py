"""`occupancy estimate`'s arithmetic: linear in the fleet, the measured figures applied once."""

import pytest

from occupancy.capacity import DAY_S, Measured, plan


def test_a_small_fleet_fits_one_node_with_the_minimum_shards():
    p = plan(10_000, 5.0, 60)
    assert p.pings_per_s == 2_000
    assert p.nodes == 1 and p.user_shards == 2 and p.cell_shards == 2
    m = Measured()
    assert p.ingest_cores == pytest.approx(2_000 / m.streamed_pings_per_core)
    assert p.raw_bytes_per_month == pytest.approx(2_000 * 30 * DAY_S * m.raw_bytes_per_ping)
    assert p.raw_bytes_retained == pytest.approx(2 * p.raw_bytes_per_month)


def test_storage_and_cores_scale_with_the_ping_rate():
    small, large = plan(1_000_000, 10.0, 30), plan(10_000_000, 10.0, 30)
    assert large.pings_per_s == 10 * small.pings_per_s
    assert large.raw_bytes_per_month == pytest.approx(10 * small.raw_bytes_per_month)
    assert large.ingest_cores == pytest.approx(10 * small.ingest_cores)
    assert large.nodes > small.nodes and large.user_shards > small.user_shards


def test_gateways_batching_need_fewer_cores_than_per_message_devices():
    streamed = plan(1_000_000, 5.0, 60)
    batched = plan(1_000_000, 5.0, 60, per_message=False)
    assert batched.ingest_cores < streamed.ingest_cores / 5
    assert batched.nodes < streamed.nodes
    # storage does not depend on how pings arrive
    assert batched.raw_bytes_per_month == streamed.raw_bytes_per_month


def test_every_node_is_at_most_sixty_percent_busy():
    for devices in (1_000, 50_000, 2_000_000, 20_000_000):
        p = plan(devices, 2.0, 60, cores_per_node=16)
        busy = p.ingest_cores + p.archive_cores + p.query_cores
        assert busy <= p.nodes * 16 * 0.6


def test_redis_holds_every_device_and_the_unarchived_log():
    m = Measured()
    p = plan(200_000, 1.0, 60, snapshot_interval_s=10, checkpoint_interval_s=5)
    per_device = m.checkpoint_bytes_per_device + m.id_bytes_per_device
    log = 200_000 * 25 * m.wal_bytes_per_ping
    assert p.redis_memory_bytes == pytest.approx(2 * (200_000 * per_device + log))


@pytest.mark.parametrize("args", [(0, 5.0, 60), (10, 0.0, 60), (10, 5.0, -1)])
def test_nonsense_is_refused(args):
    with pytest.raises(ValueError):
        plan(*args)
