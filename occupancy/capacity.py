"""`occupancy estimate`: a capacity plan from the fleet's size and the figures measured by bench/.

Every rate and size below is a measurement on a 2-core machine (BENCHMARKS.md, 2026-11-24/25);
the plan scales them linearly and keeps headroom, so it is a starting point to check against the
metrics of a real deployment, not a promise.
"""

import math
from dataclasses import dataclass

MIB = 1 << 20
GB = 1e9
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Measured:
    """Per-core rates and per-item sizes, with the command that measured each."""

    # bench/ingest.py: batched SendPings, whole live path incl. Redis and the load generator,
    # 137,469 pings/s on 2 cores
    batched_pings_per_core: float = 68_700
    # bench/ingest.py: StreamPings, one ping per message, 18,722 pings/s on 2 cores
    streamed_pings_per_core: float = 9_360
    # bench/history.py: raw pings written to ClickHouse (chDB) by the snapshotter, one core
    archive_rows_per_core: float = 98_300
    # bench/engine_throughput.py: one user shard's engine, 4.83 µs a ping in process; a live
    # shard also packs and appends its WAL, so plan for half
    user_shard_pings_per_s: float = 100_000
    # bench/engine_throughput.py: user shard + cell counts per tracked device (tracemalloc)
    shard_bytes_per_device: float = 1_138
    actor_base_bytes: float = 120 * MIB  # one Ray worker process (RAY_NOTES: 60-120 MiB)
    # bench/footprint.py: Redis MEMORY USAGE
    wal_bytes_per_ping: float = 45.6
    checkpoint_bytes_per_device: float = 84.0
    id_bytes_per_device: float = 165.7  # both sides: pseudonym -> raw id and raw id -> pseudonym
    # bench/history.py: compressed bytes in active parts (system.parts)
    raw_bytes_per_ping: float = 22.5
    presence_bytes_per_ping: float = 5.2  # devices that move every report; fewer when they dwell


@dataclass(frozen=True, slots=True)
class Plan:
    pings_per_s: float
    ingest_cores: float
    archive_cores: float
    query_cores: float
    nodes: int
    user_shards: int
    cell_shards: int
    shard_memory_bytes: float
    redis_memory_bytes: float
    raw_bytes_per_month: float
    presence_bytes_per_month: float
    raw_bytes_retained: float

    def rows(self, cores_per_node: int) -> list[tuple[str, str, str]]:
        """(quantity, value, how it follows) for a table."""

        def gb(n: float) -> str:
            return f"{n / GB:,.2f} GB" if n < 1e12 else f"{n / 1e12:,.2f} TB"

        return [
            ("pings/s", f"{self.pings_per_s:,.0f}", "devices / interval"),
            ("ingest cores", f"{self.ingest_cores:.2f}", "handlers, shards, Redis"),
            ("history cores", f"{self.archive_cores:.2f}", "snapshotter"),
            ("query cores", f"{self.query_cores:.2f}", "Serve, Ray daemons"),
            (
                "nodes",
                str(self.nodes),
                f"{cores_per_node} cores, ≤ 60% busy",
            ),
            ("user shards", str(self.user_shards), "≤ 100k pings/s each"),
            ("cell shards", str(self.cell_shards), "half the user shards"),
            ("shard memory", gb(self.shard_memory_bytes), "1.1 kB/device + actors"),
            ("Redis memory", gb(self.redis_memory_bytes), "WAL, checkpoints, ids, x2"),
            ("ClickHouse raw / month", gb(self.raw_bytes_per_month), "22.5 B/ping"),
            ("ClickHouse raw retained", gb(self.raw_bytes_retained), "per retention"),
            (
                "ClickHouse presence / month",
                gb(self.presence_bytes_per_month),
                "5.2 B/ping",
            ),
        ]


def plan(
    devices: int,
    interval_s: float,
    retention_days: int,
    cores_per_node: int = 8,
    per_message: bool = True,
    snapshot_interval_s: float = 10.0,
    checkpoint_interval_s: float = 5.0,
    m: Measured = Measured(),
) -> Plan:
    """The plan for `devices` each reporting every `interval_s`; `per_message`: devices stream
    one ping a message (phones, trackers), else gateways send batches."""
    if devices <= 0 or interval_s <= 0 or retention_days < 0 or cores_per_node <= 0:
        raise ValueError("devices, interval and cores per node must be positive")
    rate = devices / interval_s
    per_core = m.streamed_pings_per_core if per_message else m.batched_pings_per_core
    ingest = rate / per_core
    archive = rate / m.archive_rows_per_core
    user_shards = max(2, math.ceil(rate / m.user_shard_pings_per_s))
    cell_shards = max(2, math.ceil(user_shards / 2))
    nodes_guess = max(1, math.ceil((ingest + archive) / (cores_per_node * 0.6)))
    query = 0.5 * nodes_guess  # a Serve replica and Ray's daemons on every node
    nodes = max(1, math.ceil((ingest + archive + query) / (cores_per_node * 0.6)))
    actors = user_shards + cell_shards + 1 + 2 * nodes  # + space shard, handlers per node
    shard_memory = devices * m.shard_bytes_per_device + actors * m.actor_base_bytes
    # a WAL entry stays until it is both checkpointed and archived
    wal_window_s = 2 * snapshot_interval_s + checkpoint_interval_s
    redis_data = rate * wal_window_s * m.wal_bytes_per_ping + devices * (
        m.checkpoint_bytes_per_device + m.id_bytes_per_device
    )
    month = rate * 30 * DAY_S
    return Plan(
        pings_per_s=rate,
        ingest_cores=ingest,
        archive_cores=archive,
        query_cores=query,
        nodes=nodes,
        user_shards=user_shards,
        cell_shards=cell_shards,
        shard_memory_bytes=shard_memory,
        redis_memory_bytes=2 * redis_data,
        raw_bytes_per_month=month * m.raw_bytes_per_ping,
        presence_bytes_per_month=month * m.presence_bytes_per_ping,
        raw_bytes_retained=rate * retention_days * DAY_S * m.raw_bytes_per_ping,
    )
