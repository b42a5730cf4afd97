"""The archive: shard logs and presence pieces written to history, and a dead-letter stream for
what ClickHouse refuses, so that one bad row never stops history for every other device, and
log ranges spilled to local files while ClickHouse is away (actors/spill.py)."""

import itertools
import logging
import re
import time
from collections.abc import Callable

import pyarrow as pa
import redis

from actors.spill import Spill, wal_key
from clickhouse import lake as lakes
from clickhouse.lake import Lake
from clickhouse.store import DOOR_COLUMNS, HistoryStore
from engine.record import ARRIVAL, PingRecord, is_pings
from state.wal import PREFIX, Wal, pack, unpack

log = logging.getLogger(__name__)

DEADLETTER = f"{PREFIX}:deadletter"
DEADLETTER_KEEP = 10_000  # entries; the oldest go first
DEAD_ROWS_BYTES = 256 * 1024  # the refused rows an entry keeps, packed
MAX_ENTRIES = 200  # log entries (batches) archived per shard per write
ROUND_ENTRIES = 1_000  # per shard per round: catch-up goes in bounded chunks
MAX_REFUSALS = 32  # refused inserts per block before what is left is dead-lettered whole

# ClickHouse error codes that say "not now" rather than "never": such a block is retried whole
_TRANSIENT = {
    3,  # UNEXPECTED_END_OF_FILE
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS (merges behind; "too many partitions" is told apart by its text)
    319,  # UNKNOWN_STATUS_OF_INSERT
    394,  # QUERY_WAS_CANCELLED
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
}
_CODE = re.compile(r"Code: (\d+)\.")


class ArchiveUnavailable(Exception):
    """The store cannot take writes now: the block waits in Redis and is written later."""


def refused(exc: Exception) -> bool:
    """Whether a failed insert is ClickHouse refusing the block itself (it will refuse it again)
    rather than a store that is down, busy or unreachable."""
    match = _CODE.search(str(exc))
    if match is None:  # no ClickHouse answer at all: a connection or client failure
        return False
    code = int(match.group(1))
    if code == 252:
        return "partitions" in str(exc)
    return code not in _TRANSIENT


class DeadLetter:
    """What history refused, newest last, in a bounded Redis stream: the table, the shard and
    log range it came from, the error, and the refused rows themselves (up to DEAD_ROWS_BYTES
    packed), for an operator to look at and write again once the cause is fixed."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def add(self, kind: str, shard: str, token: str, rows: list, error: str) -> None:
        kept, size = [], 0
        for row in rows:
            size += len(pack(row))
            if size > DEAD_ROWS_BYTES:
                break
            kept.append(row)
        entry = {
            "kind": kind,
            "shard": shard,
            "token": token,
            "rows": len(rows),
            "error": error[:2_000],
            "data": pack(kept),
            "at": int(time.time() * 1000),
        }
        self.client.xadd(DEADLETTER, entry, maxlen=DEADLETTER_KEEP, approximate=True)

    def entries(self, count: int = 100) -> list[dict]:
        """The newest `count` entries, newest first, with their rows unpacked."""
        out = []
        for stream_id, fields in self.client.xrevrange(DEADLETTER, count=count):
            entry = {k.decode(): v for k, v in fields.items()}
            out.append(
                {
                    "id": stream_id.decode(),
                    "kind": entry["kind"].decode(),
                    "shard": entry["shard"].decode(),
                    "token": entry["token"].decode(),
                    "rows": int(entry["rows"]),
                    "error": entry["error"].decode(),
                    "data": unpack(entry["data"]),
                    "at": int(entry["at"]),
                }
            )
        return out

    def __len__(self) -> int:
        return int(self.client.xlen(DEADLETTER))


class Archiver:
    """Writes blocks to the store. A block ClickHouse refuses while it answers other queries is
    split in halves, each written with a token derived from the block's (so that a retried part
    is still deduplicated), down to the rows it still refuses, which go to the dead-letter
    stream; a store that is down or busy makes the whole block wait (ArchiveUnavailable).

    Log entries are archived in ranges recorded in Redis before they are written (`intent`), so
    a retry after a crash writes the very same ranges and tokens again; a range whose halving
    began is retried in halves."""

    def __init__(
        self,
        client: redis.Redis,
        store: HistoryStore,
        on_dead: Callable[[str, int], None] = lambda kind, rows: None,
        lake: Lake | None = None,
        on_lake: Callable[[str, int, int], None] = lambda kind, files, size: None,
    ):
        self.client = client
        self.store = store
        self.dead = DeadLetter(client)
        self.on_dead = on_dead
        self.lake = lake
        self.on_lake = on_lake

    # -- log ranges -----------------------------------------------------------------------------

    def archive_log(
        self, wal: Wal, shard: str, kind: str, convert, on_range=None, spill: Spill | None = None
    ) -> tuple[int, bool]:
        """Write `shard`'s spilled ranges, then its log entries after the archived position,
        MAX_ENTRIES at a time and at most ROUND_ENTRIES in all; `convert(shard, entries)` gives
        (data, rows) for `kind` ("pings" or "door_events"). Returns the rows written (or
        dead-lettered) and whether more are waiting."""
        total, budget = 0, ROUND_ENTRIES
        for spilled in spill.ranges(shard) if spill is not None else []:
            if budget <= 0:
                return total, True
            entries, halved = spilled.load()
            total += self._write_range(shard, kind, convert, entries, halved, spilled.mark_halved)
            if on_range is not None:
                on_range(entries)
            spill.remove(spilled)
            budget -= len(entries)
        key = intent_key(shard)
        while budget > 0:
            intent = self.client.get(key)
            if intent is not None:  # a range begun before: the very same entries again
                first, last, *mode = intent.decode().split(" ")
                entries = wal.entries_between(first, last)
                halved = mode == ["halved"]
            else:
                entries = list(itertools.islice(wal.entries_after(wal.archived()), MAX_ENTRIES))
                if not entries:
                    return total, False
                first, last = entries[0][0], entries[-1][0]
                self.client.set(key, f"{first} {last}")
                halved = False

            def halving(first=first, last=last) -> None:
                self.client.set(key, f"{first} {last} halved")

            total += self._write_range(shard, kind, convert, entries, halved, halving)
            if on_range is not None:
                on_range(entries)
            wal.set_archived(last)
            self.client.delete(key)
            budget -= len(entries)
            if len(entries) < MAX_ENTRIES:
                return total, False
        return total, True

    def _write_range(self, shard, kind, convert, entries, halved, halving) -> int:
        """One log range, with the dedup token naming it wherever it is kept."""
        data, n = convert(shard, entries)
        token = f"{shard}:{entries[0][0]}:{entries[-1][0]}"
        # raw pings as Arrow once: chDB reads this block, and the lake writes it
        arrow = lakes.exact_block(kind, data) if kind == "pings" and n else None
        self._write(kind, shard, token, (data, arrow) if kind == "pings" else data, n, halved,
                    halving)  # fmt: skip
        if self.lake is not None and n:
            self._to_lake(kind, token, data, arrow)
        return n

    def _to_lake(self, kind: str, token: str, data, arrow) -> None:
        """The whole range into the lake, after the store (a retry writes the same files over
        them, and the store's token drops the rows it already holds)."""
        columns = data
        if kind == "door_events":
            columns = {
                c: list(v) for c, v in zip(DOOR_COLUMNS, zip(*data, strict=True), strict=True)
            }
        try:
            table = arrow if arrow is not None else lakes.block(kind, columns)
            files, size = self.lake.write(kind, token, table)
        except Exception as exc:
            raise ArchiveUnavailable(f"lake: {str(exc).splitlines()[0][:500]}") from exc
        self.on_lake(kind, files, size)

    def write_audit(self, rows: list, token: str, halved: bool = False, halving=None) -> int:
        """Audit records of one range of their stream (observability/audit.py), with its token."""
        self._write("audit", "audit", token, rows, len(rows), halved, halving)
        return len(rows)

    def write_presence(self, shard: str, rows: list, version: int) -> int:
        """Presence pieces of one export (no token: a piece's latest version wins)."""
        self._write("presence", shard, "", (rows, version), len(rows))
        return len(rows)

    # -- halving --------------------------------------------------------------------------------

    def _write(self, kind, shard, token, data, n, halved=False, halving=None) -> None:
        write, rows_of = _KINDS[kind](self.store, data)
        refusals = [0]

        def attempt(lo: int, hi: int, tok: str) -> None:
            try:
                write(lo, hi, tok)
                return
            except Exception as exc:
                if not (refused(exc) and self._reachable()):
                    raise ArchiveUnavailable(str(exc).splitlines()[0][:500]) from exc
                error = str(exc)
            refusals[0] += 1
            if hi - lo == 1 or refusals[0] >= MAX_REFUSALS:
                self.dead.add(kind, shard, tok, rows_of(lo, hi), error)
                self.on_dead(kind, hi - lo)
                log.error("history refused %d %s rows of %s: %s", hi - lo, kind, shard, error)
                return
            if halving is not None and lo == 0 and hi == n:
                halving()
            split(lo, hi, tok)

        def split(lo: int, hi: int, tok: str) -> None:
            mid = (lo + hi) // 2
            base = token or kind
            attempt(lo, mid, f"{base}:r{lo}-{mid}" if token else "")
            attempt(mid, hi, f"{base}:r{mid}-{hi}" if token else "")

        if n == 0:
            return
        if halved and n > 1:
            split(0, n, token)
        else:
            attempt(0, n, token)

    def _reachable(self) -> bool:
        try:
            self.store.backend.rows("SELECT 1")
            return True
        except Exception:
            return False


def intent_key(shard: str) -> str:
    """The log range of `shard` being archived, recorded before it is written."""
    return f"{PREFIX}:archiving:{shard}"


# -- spilling -------------------------------------------------------------------------------------


def spill_range(client: redis.Redis, wal: Wal, shard: str, spill: Spill) -> int:
    """Move `shard`'s oldest unarchived range (the one being archived, if any, as it is) from
    Redis to a spill file; returns the file's size, 0 when nothing is left to move. The file is
    written first, the archive mark moved after: a crash in between loses nothing
    (`reconcile_spill` moves the mark again) and writes nothing twice (same range, same token)."""
    intent = client.get(intent_key(shard))
    if intent is not None:
        first, last, *mode = intent.decode().split(" ")
        entries, halved = wal.entries_between(first, last), mode == ["halved"]
    else:
        entries = list(itertools.islice(wal.entries_after(wal.archived()), MAX_ENTRIES))
        halved = False
    if not entries:
        return 0
    size = spill.write(shard, entries, halved)
    wal.set_archived(entries[-1][0])
    client.delete(intent_key(shard))
    return size


def reconcile_spill(client: redis.Redis, wal: Wal, shard: str, spill: Spill) -> None:
    """After a crash between a spill file and its mark: the mark past every spilled range, and
    no intent left for a range that was spilled."""
    last = spill.last(shard)
    if last is None or wal_key(last) <= wal_key(wal.archived()):
        return
    wal.set_archived(last)
    intent = client.get(intent_key(shard))
    if intent is not None and wal_key(intent.decode().split(" ")[1]) <= wal_key(last):
        client.delete(intent_key(shard))


def ping_columns(
    shard: str, entries: list[tuple[str, dict]], record: type[PingRecord] = PingRecord
) -> tuple[dict[str, list], int]:
    """The `raw_pings` columns of log entries, by name (`record`'s columns, then the arrival
    columns), built column by column: the entries are columnar already."""
    out: dict[str, list] = {name: [] for name in record.archive_columns()}
    received, shards, ms, seq, index = (out[name] for name, _ in ARRIVAL)
    for wal_id, entry in entries:
        if not is_pings(entry):  # devices handed over by a rebalance, a forget
            continue
        pings = record.from_log(entry)
        n = len(pings)
        for name, values in pings.archived():
            out[name] += values
        wal_ms, wal_seq = (int(x) for x in wal_id.split("-"))
        received += [pings.now] * n
        shards += [shard] * n
        ms += [wal_ms] * n
        seq += [wal_seq] * n
        index += range(n)
    return out, len(index)


def door_rows(shard: str, entries: list[tuple[str, dict]]) -> tuple[list[tuple], int]:
    rows = [
        (sensor, ts, entry.get("now", 0), direction, shard, wal_id)
        for wal_id, entry in entries
        for sensor, ts, direction in zip(entry["sensor"], entry["ts"], entry["dir"], strict=True)
    ]
    return rows, len(rows)


def _pings(store: HistoryStore, data: tuple[dict[str, list], pa.Table | None]):
    columns, arrow = data  # the Arrow block, if every value converts exactly

    def write(lo: int, hi: int, token: str) -> None:
        part = arrow.slice(lo, hi - lo) if arrow is not None else None
        store.write_pings({name: values[lo:hi] for name, values in columns.items()}, token, part)

    def rows_of(lo: int, hi: int) -> list:
        names = list(columns)
        part = (values[lo:hi] for values in columns.values())
        return [dict(zip(names, row, strict=True)) for row in zip(*part, strict=True)]

    return write, rows_of


def _door_events(store: HistoryStore, rows: list):
    def write(lo: int, hi: int, token: str) -> None:
        store.write_door_events(rows[lo:hi], token)

    return write, lambda lo, hi: [list(r) for r in rows[lo:hi]]


def _presence(store: HistoryStore, data: tuple[list, int]):
    rows, version = data

    def write(lo: int, hi: int, token: str) -> None:
        store.write_presence(rows[lo:hi], version)

    return write, lambda lo, hi: [list(r) for r in rows[lo:hi]]


def _audit(store: HistoryStore, rows: list):
    def write(lo: int, hi: int, token: str) -> None:
        store.write_audit(rows[lo:hi], token)

    return write, lambda lo, hi: [list(r) for r in rows[lo:hi]]


_KINDS = {
    "pings": _pings,
    "door_events": _door_events,
    "presence": _presence,
    "audit": _audit,
}
ARCHIVED_KINDS = tuple(_KINDS)


def _device(row) -> int | None:
    """The device of a dead-lettered row: a ping's by name, a presence piece's (and a ping's of
    the earlier form) first."""
    if isinstance(row, dict):
        return row.get("device")
    return row[0] if row else None


def scrub_dead_letters(client: redis.Redis, old: int, fresh: int) -> int:
    """Dead-lettered rows of the device: raw pings dropped, presence pieces re-keyed. An entry
    that held any is written again (at the end of the stream) without them. Entries changed."""
    changed = 0
    for stream_id, fields in client.xrange(DEADLETTER):
        kind = fields.get(b"kind", b"").decode()
        if kind not in ("pings", "presence"):
            continue
        rows = unpack(fields[b"data"])
        if not any(_device(row) == old for row in rows):
            continue
        if kind == "pings":
            rows = [row for row in rows if _device(row) != old]
        else:
            rows = [[fresh, *row[1:]] if row[0] == old else row for row in rows]
        entry = {**fields, b"data": pack(rows)}
        pipe = client.pipeline(transaction=True)
        pipe.xadd(DEADLETTER, entry)
        pipe.xdel(DEADLETTER, stream_id)
        pipe.execute()
        changed += 1
    return changed
