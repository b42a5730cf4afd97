"""History: the snapshotter and the one owner of the ClickHouse connection (chDB's data dir may
be opened by one process only), which also answers history queries."""

import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import redis

from actors.archive import (
    ARCHIVED_KINDS,
    Archiver,
    DeadLetter,
    door_rows,
    ping_columns,
    reconcile_spill,
    spill_range,
)
from actors.forget_jobs import Finisher
from actors.history_queries import HistoryQueries
from actors.hooks import Deliverer, DeliveryConfig
from actors.mirror import StateMirror
from actors.spill import Spill
from clickhouse.backends import Unreachable, connect
from clickhouse.lake import Lake
from clickhouse.store import HistoryStore
from clients.errors import Unavailable
from clients.family import Layout, blocking
from clients.history import History as HistoryClient
from clients.history import HistoryUnavailable
from clients.queries import LiveQueries
from clients.refs import ACTOR_OPTIONS
from clients.users import UserShards
from observability import telemetry, tracing
from observability.audit import KEEP as AUDIT_KEEP
from observability.audit import STREAM as AUDIT_STREAM
from observability.audit import AuditDrain
from state import redis_client
from state.layout import committed, current, pending
from state.topology import Topology
from state.wal import PREFIX, Wal

log = logging.getLogger(__name__)

MIRROR_EVERY_S = 1.0
SPILL_DIR = "spill"  # under the data dir: log ranges waiting for ClickHouse
ROLLUP_MARGIN_MS = 120_000  # an hour is final this long after max_age has passed its end
LAKE_SWEEP_EVERY_S = 3600.0  # the lake's partitions are days: an hourly sweep is plenty


@dataclass(frozen=True)
class HistoryConfig:
    clickhouse_url: str  # empty: chDB in data_dir
    data_dir: str
    snapshot_interval_s: float = 10.0
    raw_retention_days: int = 60
    aggregate_retention_days: int = 2557
    audit_retention_days: int = 400
    archive_backlog_max_mb: float = 256.0  # beyond it, log ranges spill to local files
    lake_url: str = ""  # empty: no lake (the runtime's default is the data dir's lake/)
    lake_retention_days: int = 2557
    hooks: DeliveryConfig = field(default_factory=DeliveryConfig)  # webhooks (actors/hooks.py)


# snapshots, queries and the operators' calls each have their own threads: a long catch-up
# never holds up an `at=` query, and neither holds up `status` (the health check)
GROUPS = {"archive": 1, "query": 2, "control": 1}


@ray.remote(**ACTOR_OPTIONS, max_concurrency=1, concurrency_groups=GROUPS)
class History(HistoryQueries):
    """Every `snapshot_interval_s`: the user shards' presence pieces, then the raw pings and
    door events of every shard's write-ahead log since the last archived entry.

    Each write is idempotent: a piece's latest version wins; a WAL range is written with a dedup
    token naming it, recorded in Redis before the write, so a retry writes the very same range.
    While the store is unreachable (or writes are paused), pieces stay pending in the user
    shards (and their checkpoints) and log entries stay in Redis, up to
    `archive_backlog_max_mb`; the oldest ranges beyond it go to spill files in the data dir
    (actors/spill.py). After an outage the backlog is written back in bounded rounds, one right
    after the other: history has no holes after.
    """

    def __init__(self, topology: Topology, config: HistoryConfig):
        self.topology = topology
        self.config = config
        self.users = UserShards(Layout(topology, follow=False))  # the layout: `_refresh`
        self.redis = redis_client.connect(topology.redis_url)
        self.store: HistoryStore | None = None
        self.archiver: Archiver | None = None
        self.paused = False
        self.last_error = ""
        self.last_snapshot_ms = 0
        self.last_rows: dict[str, int] = {}  # rows the last snapshot wrote, by kind
        self.snapshots = 0
        self.behind = False  # the last round left entries for the next (catching up)
        self.backlog_bytes = 0  # unarchived log entries in Redis, estimated, last round
        self.spill = Spill(Path(config.data_dir) / SPILL_DIR)
        self.lake = Lake(config.lake_url, config.lake_retention_days) if config.lake_url else None
        self.forgets = Finisher(self.redis, self.users, self.spill, self.lake)
        self.audit: AuditDrain | None = None
        self._connect_lock = threading.Lock()
        self._wals: dict[str, Wal] = {}
        self._refresh()
        counts = LiveQueries(topology).space_counts
        self.hooks = Deliverer(self.redis, config.hooks, counts, self._delivered)
        self._observe()
        self.tracer = tracing.tracer("history", topology.redis_url)
        self._connect()
        self._stop = threading.Event()
        own = HistoryClient(topology, ray.get_runtime_context().current_actor)
        threading.Thread(target=self._loop, args=(own,), daemon=True).start()
        lost = self._redis_lost
        self.mirror = StateMirror(self.redis, "history", lambda: lost.add(1, {"shard": "history"}))
        threading.Thread(target=self._mirror_loop, daemon=True).start()
        threading.Thread(target=self.hooks.run, args=(self._stop,), daemon=True).start()

    def _delivered(self, outcome: str) -> None:
        self._deliveries.add(1, {"outcome": outcome})

    def _mirror_loop(self) -> None:
        """Keys and definitions copied every second, written back when Redis lost them."""
        while not self._stop.wait(MIRROR_EVERY_S):
            try:
                self.mirror.refresh()
            except redis.RedisError as exc:  # down: the next round tries again
                log.debug("mirror: %s", exc)

    def _observe(self) -> None:
        from opentelemetry.metrics import Observation

        m = telemetry.meter("history", self.topology.redis_url)
        self._snapshot_s = m.create_histogram(
            "occupancy_snapshot_seconds",
            unit="s",
            description="Time a snapshot round took (presence, raw pings, door events)",
            explicit_bucket_boundaries_advisory=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        )
        self._archived = m.create_counter(
            "occupancy_archived_rows_total", description="Rows written to history by kind"
        )
        self._redis_lost = m.create_counter(
            "occupancy_redis_lost_total",
            description="Times a process found Redis emptied (flushed, or started without its "
            "files) and wrote what it holds back",
        )
        self._lake_files = m.create_counter(
            "occupancy_lake_files_total", description="Parquet files written to the lake by kind"
        )
        self._lake_bytes = m.create_counter(
            "occupancy_lake_bytes_total", unit="By", description="Bytes written to the lake"
        )
        self._dead = m.create_counter(
            "occupancy_deadletter_total",
            description="Rows history refused, kept in the dead-letter stream, by kind",
        )
        self._deliveries = m.create_counter(
            "occupancy_hook_deliveries_total",
            description="Webhook deliveries by outcome (ok, retried: ok after a failure, failed)",
        )
        # reported from the start at 0, so that an alert's increase() sees the first one
        self._redis_lost.add(0, {"shard": "history"})
        for outcome in ("ok", "retried", "failed"):
            self._deliveries.add(0, {"outcome": outcome})
        for kind in ARCHIVED_KINDS:
            self._dead.add(0, {"kind": kind})

        def lag(_):
            return [
                Observation(wal.archive_lag_ms() / 1000, {"shard": name})
                for name, wal in list(self._wals.items())
            ]

        def backlog(_):
            return [
                Observation(wal.length(), {"shard": name}) for name, wal in list(self._wals.items())
            ]

        m.create_observable_gauge(
            "occupancy_archive_lag_seconds",
            callbacks=[lag],
            description="Age of the oldest log entry not yet in history, per shard",
        )

        def layout(_):
            committed_now, unfinished = committed(self.redis), pending(self.redis)
            version = committed_now["version"] if committed_now else self.topology.version
            return [Observation(version, {"state": "committed"})] + (
                [Observation(unfinished["version"], {"state": "pending"})] if unfinished else []
            )

        def shards(_):
            now = current(self.topology, self.redis)
            return [Observation(1, {"shard": s, "family": "user"}) for s in now.user_shards] + [
                Observation(1, {"shard": s, "family": "cell"}) for s in now.cell_shards
            ]

        m.create_observable_gauge(
            "occupancy_layout_shard_info",
            callbacks=[shards],
            description="1 for each shard of the committed layout that reports metrics",
        )
        m.create_observable_gauge(
            "occupancy_layout_version",
            callbacks=[layout],
            description="The shard layout's version; a pending one means a rebalance is unfinished",
        )
        m.create_observable_gauge(
            "occupancy_snapshot_backlog_entries",
            callbacks=[backlog],
            description="Log entries waiting for history or a checkpoint, per shard",
        )
        m.create_observable_gauge(
            "occupancy_hook_outbox_entries",
            callbacks=[lambda _: [Observation(self.hooks.store.backlog())]],
            description="Webhook events waiting in the outboxes, over every hook",
        )
        m.create_observable_gauge(
            "occupancy_audit_backlog_records",
            callbacks=[lambda _: [Observation(int(self.redis.xlen(AUDIT_STREAM)))]],
            description=f"Audit records waiting in Redis for history (the oldest are dropped "
            f"beyond {AUDIT_KEEP:,})",
        )

    def _refresh(self) -> None:
        """The committed shard layout, and every shard log to archive: the layout's, and those
        of shards a rebalance retired that still hold entries."""
        self.topology = current(self.topology, self.redis)
        self.users.topology = self.topology
        names = {*self.topology.user_shards, *self.topology.space_shards}
        prefix = f"{PREFIX}:wal:"
        for key in self.redis.scan_iter(match=f"{prefix}*", count=1000):
            names.add(key.decode()[len(prefix) :])
        for name in sorted(names - self._wals.keys()):
            self._wals[name] = Wal(self.redis, name)
        for wal in self._wals.values():  # every round: a Redis that lost its data gets them again
            wal.start_archive()
        for name in self.spill.shards():  # a crash between a spill file and its mark
            reconcile_spill(
                self.redis, self._wals.setdefault(name, Wal(self.redis, name)), name, self.spill
            )

    def _connect(self) -> HistoryStore:
        with self._connect_lock:  # snapshots and queries may both be first
            if self.store is None:
                c = self.config
                try:
                    backend = connect(c.clickhouse_url, Path(c.data_dir))
                    self.store = HistoryStore(
                        backend,
                        c.raw_retention_days,
                        c.aggregate_retention_days,
                        c.audit_retention_days,
                    )
                except Exception as exc:
                    self.last_error = f"connect: {exc}"
                    raise HistoryUnavailable(self.last_error) from exc
            return self.store

    def _loop(self, own: HistoryClient) -> None:
        wait = self.config.snapshot_interval_s
        swept = time.monotonic() - LAKE_SWEEP_EVERY_S  # the first round sweeps
        while not self._stop.wait(wait):
            if self.lake is not None and time.monotonic() - swept > LAKE_SWEEP_EVERY_S:
                swept = time.monotonic()
                try:  # partitions past the lake's retention, as ClickHouse's TTL does
                    self.lake.sweep()
                except Exception as exc:  # the next sweep tries again
                    log.warning("lake sweep failed: %s", exc)
            wait = self.config.snapshot_interval_s
            try:
                if blocking(own.snapshot()).get("behind"):
                    wait = 0.05  # catching up: the next chunk at once
            except Exception as exc:  # logged; the next round retries
                log.warning("snapshot failed: %s", exc)
            if self.forgets.waiting():  # forgets under way go on after each round
                try:
                    blocking(own.forget_pending())
                except Exception as exc:
                    log.warning("forget failed: %s", exc)

    # -- snapshots ------------------------------------------------------------------------------

    @ray.method(concurrency_group="archive")
    def snapshot(self) -> dict:
        """One round; {"presence", "pings", "door_events", "audit"} rows written and whether
        entries were left for the next round ("behind"), or raises. Whatever happened, the backlog
        left in Redis is then bounded (spilled beyond `archive_backlog_max_mb`)."""
        try:
            return self._snapshot()
        finally:
            try:
                self._bound_backlog()
            except Exception as exc:  # Redis or the disk: the next round tries again
                log.warning("bounding the backlog failed: %s", exc)

    def _snapshot(self) -> dict:
        self._refresh()
        if self.paused:
            raise HistoryUnavailable("history writes are paused")
        archiver = self._archiver()
        started = time.perf_counter()
        out = {"presence": 0, "pings": 0, "door_events": 0, "audit": 0}
        behind = False
        try:
            exported_ms = int(time.time() * 1000)
            exports = blocking(self.users.history_exports())
            version = time.time_ns()
            for name, (mark, rows) in zip(self.topology.user_shards, exports, strict=True):
                out["presence"] += archiver.write_presence(name, rows, version)
                blocking(self.users.history_confirm(name, mark))
            # hours no ping can change any more (every piece of them is written now) are kept
            # for series; the clocks of the shards may be ahead of ours by the margin
            max_age = self.topology.engine_spec().limits.max_age_ms
            self._connect().roll_up(exported_ms - max_age - ROLLUP_MARGIN_MS)
            for name in list(self._wals):
                wal = self._wals[name]
                trace = functools.partial(self._trace, name, time.time_ns())
                kind, convert = (
                    ("door_events", door_rows)
                    if name in self.topology.space_shards
                    else ("pings", ping_columns)
                )
                rows, more = archiver.archive_log(wal, name, kind, convert, trace, self.spill)
                out[kind] += rows
                behind = behind or more
            if self.audit is None:
                self.audit = AuditDrain(self.redis, archiver.write_audit)
            out["audit"], more = self.audit.run()
            behind = behind or more
        except Unavailable:
            raise
        except Exception as exc:
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HistoryUnavailable(self.last_error) from exc
        self.last_error = ""
        self.last_snapshot_ms = int(time.time() * 1000)
        self.last_rows = out
        self.behind = behind
        self.snapshots += 1
        self._snapshot_s.record(time.perf_counter() - started)
        for kind, n in out.items():
            self._archived.add(n, {"kind": kind})
        return {**out, "behind": behind}

    def _bound_backlog(self) -> None:
        """Spill the oldest unarchived ranges, largest log first, until what Redis holds for
        history is under `archive_backlog_max_mb`."""
        limit = self.config.archive_backlog_max_mb * 2**20
        sizes = {name: wal.unarchived_bytes() for name, wal in list(self._wals.items())}
        total = sum(sizes.values())
        while total > limit and any(sizes.values()):
            name = max(sizes, key=sizes.__getitem__)
            moved = spill_range(self.redis, self._wals[name], name, self.spill)
            if moved == 0:
                sizes[name] = 0
                continue
            log.warning(
                "history backlog over %.0f MiB: %d bytes of %s spilled", limit / 2**20, moved, name
            )
            sizes[name] = max(0, sizes[name] - moved)
            total -= moved
        self.backlog_bytes = int(total)

    def _archiver(self) -> Archiver:
        if self.archiver is None:
            self.archiver = Archiver(
                self.redis, self._connect(), self._count_dead, self.lake, self._count_lake
            )
        return self.archiver

    def _count_lake(self, kind: str, files: int, size: int) -> None:
        self._lake_files.add(files, {"kind": kind})
        self._lake_bytes.add(size, {"kind": kind})

    def _count_dead(self, kind: str, rows: int) -> None:
        self._dead.add(rows, {"kind": kind})

    def _trace(self, shard: str, started_ns: int, entries: list) -> None:
        """A span for each traced log entry just archived, in the trace of its batch."""
        ended = time.time_ns()
        for wal_id, entry in entries:
            if "trace" in entry:
                parent = tracing.extract(entry["trace"])
                span = self.tracer.start_span(
                    "snapshot archive", context=parent, start_time=started_ns
                )
                span.set_attributes({"shard": shard, "wal_id": wal_id, "rows": len(entry["ts"])})
                span.end(end_time=ended)

    @ray.method(concurrency_group="archive")
    def forget_pending(self) -> dict[str, str]:
        """Take every forget under way as far as it goes (state/forgetting.py): its user
        shard's step, then, once history holds every log entry up to its cut, its rows in
        the store. {old pseudonym: "done" | "pending"}. Between snapshots, never during one."""
        self._refresh()
        store = None if self.paused else self._connect
        return self.forgets.run(self.topology, store, self.snapshot)

    @ray.method(concurrency_group="control")
    def drill_outage(self, down: bool) -> None:
        """An outage drill: the store refuses every call (as a ClickHouse that is down would)
        until called again with False. For chaos tests and game days on the embedded store."""
        store = self._connect()
        if down and not isinstance(store.backend, Unreachable):
            store.backend = Unreachable(store.backend)
        elif not down and isinstance(store.backend, Unreachable):
            store.backend = store.backend.real

    @ray.method(concurrency_group="control")
    def pause(self, paused: bool) -> None:
        """Stop (or resume) writing to the store (ClickHouse maintenance); snapshots wait."""
        self.paused = paused

    @ray.method(concurrency_group="control")
    def status(self) -> dict:
        backlog = {name: wal.length() for name, wal in list(self._wals.items())}
        spilled = self.spill.ranges()
        return {
            "connected": self.store is not None,
            "paused": self.paused,
            "last_error": self.last_error,
            "catching_up": self.behind or bool(spilled),
            "backlog_bytes": self.backlog_bytes,
            "spill": {
                "ranges": len(spilled),
                "bytes": self.spill.size_bytes(),
                "oldest_ms": self.spill.oldest_ms(),
            },
            "last_snapshot_ms": self.last_snapshot_ms,
            "last_rows": self.last_rows,
            "snapshots": self.snapshots,
            "wal_backlog": backlog,
            "archive_lag_ms": {
                name: wal.archive_lag_ms() for name, wal in list(self._wals.items())
            },
            "deadletter": len(DeadLetter(self.redis)),
            "audit_backlog": int(self.redis.xlen(AUDIT_STREAM)),  # records waiting
            "forgets_pending": self.forgets.pending(),
        }

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        import os

        return os.getpid()
