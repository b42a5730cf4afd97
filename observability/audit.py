"""The audit log's way to history: every process that records (API replicas, ingest handlers,
CLI commands) appends to the Redis stream `occ:audit`, capped at KEEP records; the history actor
writes them into ClickHouse's `audit` table in its snapshot rounds and trims the stream only
after they are written (engine/audit.py builds the records).

A process never blocks on this: its records go to a list, which a task of its event loop writes
every FLUSH_S, raw device ids replaced by pseudonyms on the way (they never leave the process).
While Redis does not take them, a process keeps up to BUFFER records; while ClickHouse does not,
the stream keeps up to KEEP, the oldest dropped beyond.
"""

import asyncio
import contextlib
import getpass
import logging
import os
import socket
import time
from collections import ChainMap
from collections.abc import Callable

import orjson
import redis
import redis.asyncio

from engine import audit as records
from state import id_directory, redis_client
from state.wal import PREFIX, pack, unpack

log = logging.getLogger(__name__)

STREAM = f"{PREFIX}:audit"
INTENT = f"{PREFIX}:audit:archiving"  # the range being written: "first last [halved]"
KEEP = 100_000  # records waiting for history; the oldest are dropped beyond
BUFFER = 10_000  # records a process holds while Redis is unreachable
FLUSH_S = 0.5
CHUNK = 5_000  # records per insert
ROUND = 50_000  # records per snapshot round
WARN_EVERY_S = 60.0
APPEND_CHUNK = 1_000  # records per script call: Redis serves nothing else while one runs

# KEYS[1]: the stream; ARGV[1]: its cap; ARGV[2..]: records, each appended as one entry, the
# oldest dropped beyond the cap (approximately, as XADD MAXLEN ~ does); returns its length. One
# call for many records: a pipeline of XADDs cost the writer ~15 µs a record in redis-py alone.
_APPEND = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[i])
end
return redis.call('XLEN', KEYS[1])
"""


def entry(record: dict) -> bytes:
    """A record as the stream keeps it (its params as JSON, as the table does)."""
    return pack({**record, "params": orjson.dumps(record["params"]).decode()})


def append(client: redis.Redis, record: dict) -> None:
    """One record, now (the CLI: no event loop, and the command is short)."""
    client.xadd(STREAM, {"r": entry(record)}, maxlen=KEEP, approximate=True)


@contextlib.contextmanager
def recorded(client: redis.Redis, command: str, **params):
    """A CLI command's record (source "cli", `os_user()`), written when the body ends: status
    0, or 1 if it raised. The body adds what it learns to the params it is given (never a key,
    a token or a raw device id)."""
    arrived = int(time.time() * 1000)
    started = time.perf_counter()
    status = 1
    try:
        yield params
        status = 0
    finally:
        record = records.record(
            arrived,
            "cli",
            command,
            os_user=os_user(),
            params=params,
            status=status,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        try:
            append(client, record)
        except redis.RedisError as exc:
            log.warning("the audit record of `occupancy %s` was not written: %s", command, exc)


def os_user() -> str:
    """`user@host` of the process (a CLI command's record)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


# a record to write: (record, device params' raw values, pseudonyms the caller already knew)
Made = tuple[dict, dict[str, str], dict[str, str]]


class AuditWriter:
    """A process's records on their way to the stream. `add` and `count` do no I/O and build
    nothing: a task of the caller's event loop, started by the first of them, builds and writes
    every FLUSH_S the records queued and the counts of every window that has ended. `close`
    writes what is left, open windows included (a process that is killed loses at most its
    last FLUSH_S and its open windows)."""

    def __init__(self, redis_url: str, window_s: float):
        self.client = redis_client.connect_async(redis_url)
        self._append = self.client.register_script(_APPEND)
        self.windows = records.WindowCounts(int(window_s * 1000))
        self._queued: list[Callable[[], Made]] = []  # records to build
        self._unwritten: list[Made] = []  # built; Redis did not take them yet
        self._task: asyncio.Task | None = None
        self._warned = -WARN_EVERY_S
        self.dropped = 0  # records this process could not hand to Redis

    def add(self, make: Callable[[], Made]) -> None:
        """Queue the record `make()` builds (at the next flush, off the request's path): its
        `devices` (param -> raw value) are replaced by their pseudonyms then, those the caller
        knew first, the id directory's otherwise."""
        if len(self._queued) + len(self._unwritten) >= BUFFER:
            (self._unwritten or self._queued).pop(0)
            self.dropped += 1
        self._queued.append(make)
        self._start()

    def count(self, key: tuple, duration_ms: float = 0.0, **counts: int) -> None:
        """One call counted in the current window (engine.audit.WindowCounts.add)."""
        self.windows.add(int(time.time() * 1000), key, duration_ms, **counts)
        self._start()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
            except redis.RedisError as exc:  # kept for the next flush
                self._warn("audit records wait in the process: Redis: %s", exc)
            except Exception:
                log.exception("writing audit records failed")

    async def flush(self, everything: bool = False) -> int:
        """Write the queued records and the ended windows' counts (every window's with
        `everything`); the number written. On failure they stay for the next flush."""
        now = int(time.time() * 1000)
        windows = self.windows.everything() if everything else self.windows.closed(now)
        queued, self._queued = self._queued, []
        batch, self._unwritten = self._unwritten + _built(queued), []
        batch += [(r, {}, {}) for r in windows]
        if not batch:
            return 0
        waiting = 0
        try:
            entries = await self._entries(batch)
            for i in range(0, len(entries), APPEND_CHUNK):
                chunk = entries[i : i + APPEND_CHUNK]
                waiting = await self._append(keys=[STREAM], args=[KEEP, *chunk])
                batch = batch[len(chunk) :]
        except BaseException:
            kept = batch + self._unwritten
            self.dropped += max(0, len(kept) + len(self._queued) - BUFFER)
            self._unwritten = kept[-BUFFER:]
            raise
        if waiting >= KEEP:
            self._warn(
                "the audit stream holds %d records: history is not taking them (ClickHouse "
                "down or paused?) and the oldest are dropped",
                waiting,
            )
        return len(entries)

    async def _entries(self, batch: list[Made]) -> list[bytes]:
        asked = set().union(*(records.lookups(d) - known.keys() for _, d, known in batch))
        found = await id_directory.pseudonyms_of(self.client, asked)
        out = []
        for record, devices, known in batch:
            if devices:
                names = ChainMap(known, found)  # what the caller knew first
                params = records.with_pseudonyms(record["params"], devices, names)
                record = {**record, "params": params}
            out.append(entry(record))
        return out

    async def close(self) -> None:
        """Stop the task and write everything (a graceful stop)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # a flush it was in puts its records back first
            self._task = None
        try:
            await self.flush(everything=True)
        except Exception as exc:
            log.warning("audit records lost at stop: %s", exc)

    def _warn(self, message: str, *args) -> None:
        if time.monotonic() - self._warned >= WARN_EVERY_S:
            self._warned = time.monotonic()
            log.warning(message, *args)


def _built(queued: list[Callable[[], Made]]) -> list[Made]:
    out = []
    for make in queued:
        try:
            out.append(make())
        except Exception:  # a bug: that record is lost, not the others
            log.exception("an audit record could not be built")
    return out


# -- into history (the history actor) ------------------------------------------------------------


def _after(stream_id: str) -> str:
    ms, seq = stream_id.split("-")
    return f"{ms}-{int(seq) + 1}"


_TYPES = {"ts": int, "status": int, "calls": int, "duration_ms": float, "bytes_out": int,
          "rows": int}  # fmt: skip


def rows_of(entries: list[tuple[bytes, dict]]) -> list[tuple]:
    """The table's rows (engine.audit.FIELDS order) of stream entries; one that does not
    unpack is logged and left out."""
    rows = []
    for stream_id, fields in entries:
        try:
            r = unpack(fields[b"r"])
            rows.append(tuple(_TYPES.get(f, str)(r[f]) for f in records.FIELDS))
        except Exception as exc:
            log.error("audit entry %s left out: %r", stream_id, exc)
    return rows


class AuditDrain:
    """The stream into the store, in ranges recorded in Redis before they are written (INTENT),
    each with a dedup token naming it: a range written whose trim failed, or retried after a
    crash, is written again as the very same block, which ClickHouse drops. The stream is
    trimmed only behind a written range."""

    def __init__(self, client: redis.Redis, write):
        self.client = client
        self.write = write  # (rows, token, halved, halving): actors.archive.Archiver.write_audit

    def run(self, budget: int = ROUND) -> tuple[int, bool]:
        """Move up to `budget` records; (rows written, whether more are waiting)."""
        total = 0
        while budget > 0:
            intent = self.client.get(INTENT)
            if intent is not None:  # begun before: the very same records again
                first, last, *mode = intent.decode().split(" ")
                entries = self.client.xrange(STREAM, first, last)
                halved = mode == ["halved"]
            else:
                entries = self.client.xrange(STREAM, "-", "+", count=CHUNK)
                if not entries:
                    return total, False
                first, last = entries[0][0].decode(), entries[-1][0].decode()
                self.client.set(INTENT, f"{first} {last}")
                halved = False

            def halving(first=first, last=last) -> None:
                self.client.set(INTENT, f"{first} {last} halved")

            rows = rows_of(entries)
            self.write(rows, f"audit:{first}:{last}", halved, halving)
            self.client.xtrim(STREAM, minid=_after(last), approximate=False)
            self.client.delete(INTENT)
            total += len(rows)
            budget -= max(1, len(entries))
            if intent is None and len(entries) < CHUNK:
                return total, False
        return total, True
