"""The lake: raw pings and door events as Parquet files beside ClickHouse, for the years the
fleet keeps them (raw pings leave ClickHouse after `OCC_RAW_RETENTION_DAYS`) and for rebuilding
history from them (`occupancy replay --lake`).

Files are partitioned by kind and by the UTC date and hour of the rows' event time:
`kind=pings/date=YYYY-MM-DD/hour=HH/<flush id>.parquet`, one file per archived log range per
partition. The flush id names the range (shard and first and last WAL ids), so a range archived
again after a crash or an outage writes the very same files over the old ones: nothing doubles.
On a local disk a file is written under a temporary name and renamed (a reader never sees half
of one); an object store shows an object whole once it is written. Devices are pseudonyms, as in
ClickHouse; forgetting a device rewrites every file that holds it.
"""

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clickhouse.arrow_block import arrow_block, arrow_type
from engine.record import ARRIVAL, PingRecord

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
KINDS = ("pings", "door_events")
_UNSAFE = re.compile(r"[^\w.\-]")
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")

# the Arrow types of each kind's columns: those of its ClickHouse table (clickhouse/migrations)
PING_TYPES = {
    **{c.clickhouse: arrow_type(c.type) for c in PingRecord.columns()},
    **{name: arrow_type(kind) for name, kind in ARRIVAL},
}
DOOR_TYPES = {
    "sensor": pa.string(),
    "ts": pa.int64(),
    "received": pa.int64(),
    "direction": pa.int8(),
    "shard": pa.string(),
    "wal_id": pa.string(),
}
TYPES = {"pings": PING_TYPES, "door_events": DOOR_TYPES}


def flush_id(token: str) -> str:
    """A file name for an archived range's dedup token (`shard:first:last`)."""
    return _UNSAFE.sub("_", token)


def exact_block(kind: str, columns: Mapping[str, Sequence]) -> pa.Table | None:
    """The rows of one archived range as the Arrow table chDB is given (`arrow_block`, with the
    table's column types), or None where a value would not convert exactly."""
    types = TYPES[kind]
    return arrow_block(list(columns), list(columns.values()), [types.get(n) for n in columns])


def block(kind: str, columns: Mapping[str, Sequence]) -> pa.Table:
    """The rows of one archived range as an Arrow table with the table's column types: the
    exact block, or, for a block holding a value that ClickHouse's Arrow path leaves to JSON
    (one it may refuse), converted value by value as Arrow can."""
    types = TYPES[kind]
    names = list(columns)
    data = [columns[n] for n in names]
    table = exact_block(kind, columns)
    if table is None:
        arrays = [pa.array(values, type=types.get(n)) for n, values in
                  zip(names, data, strict=True)]  # fmt: skip
        table = pa.Table.from_arrays(arrays, names=names)
    return table


def _partitions(ts: pa.Array) -> Iterator[tuple[int, pa.Array]]:
    """(hour start in ms, row indexes) for every hour of event time the rows span."""
    values = ts.to_numpy(zero_copy_only=False)
    starts = values - values % HOUR_MS
    for hour in sorted(set(starts.tolist())):
        yield hour, pa.array((starts == hour).nonzero()[0])


def partition_dir(kind: str, hour_ms: int) -> str:
    d = datetime.fromtimestamp(hour_ms / 1000, UTC)
    return f"kind={kind}/date={d:%Y-%m-%d}/hour={d:%H}"


class Lake:
    """The lake at `url` (a local path, file:// or s3://, as pyarrow's filesystems read it)."""

    def __init__(self, url: str, retention_days: int = 2557):
        if "://" not in url:  # a local path
            Path(url).mkdir(parents=True, exist_ok=True)
            url = Path(url).resolve().as_uri()
        self.fs, root = pafs.FileSystem.from_uri(url)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.retention_days = retention_days

    # -- writing ----------------------------------------------------------------------------------

    def write(self, kind: str, token: str, table: pa.Table) -> tuple[int, int]:
        """One archived range (`token` names it) into its partitions; (files, bytes) written."""
        if table.num_rows == 0:
            return 0, 0
        files = size = 0
        for hour, idx in _partitions(table.column("ts").combine_chunks()):
            path = f"{self.root}/{partition_dir(kind, hour)}/{flush_id(token)}.parquet"
            size += self._put(path, table.take(idx))
            files += 1
        return files, size

    def _put(self, path: str, table: pa.Table) -> int:
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        target = f"{path}.tmp" if self.local else path
        pq.write_table(table, target, filesystem=self.fs, compression="zstd")
        if self.local:
            self.fs.move(target, path)
        return self.fs.get_file_info(path).size or 0

    # -- reading ----------------------------------------------------------------------------------

    def files(self, kind: str, start: int | None = None, end: int | None = None) -> list[str]:
        """The files of `kind` whose hour overlaps [start, end) (every one without bounds)."""
        base = f"{self.root}/kind={kind}"
        if start is None or end is None:
            return self._parquet(base)
        out: list[str] = []
        hour = start - start % HOUR_MS
        day = None
        while hour < end:
            d = datetime.fromtimestamp(hour / 1000, UTC)
            if d.date() != day:
                day = d.date()
                present = self._parquet(f"{base}/date={d:%Y-%m-%d}")
            out += [p for p in present if f"/hour={d:%H}/" in p]
            hour += HOUR_MS
        return out

    def _parquet(self, base: str) -> list[str]:
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        found = self.fs.get_file_info(selector)
        return sorted(f.path for f in found if f.is_file and f.path.endswith(".parquet"))

    def read(self, kind: str, start: int, end: int) -> pa.Table | None:
        """Every row of `kind` with event time in [start, end), None if there is none."""
        tables = []
        for path in self.files(kind, start, end):
            table = pq.read_table(path, filesystem=self.fs)
            ts = table.column("ts")
            keep = pc.and_(pc.greater_equal(ts, start), pc.less(ts, end))
            tables.append(table.filter(keep))
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default")

    # -- forgetting and retention -----------------------------------------------------------------

    def forget(self, device: int) -> int:
        """Every ping file that holds `device` written again without its rows (removed if
        nothing is left); files rewritten. Safe to repeat."""
        changed = 0
        for path in self.files("pings"):
            devices = pq.read_table(path, columns=["device"], filesystem=self.fs).column("device")
            hit = pc.equal(devices, pa.scalar(device, pa.uint64()))
            if not pc.any(hit).as_py():
                continue
            table = pq.read_table(path, filesystem=self.fs)
            kept = table.filter(pc.invert(hit))
            if kept.num_rows:
                self._put(path, kept)
            else:
                self.fs.delete_file(path)
            changed += 1
        return changed

    def sweep(self, now_ms: int | None = None) -> int:
        """Partitions whose date is older than the retention deleted; dates removed."""
        now = datetime.fromtimestamp((now_ms or time.time() * 1000) / 1000, UTC)
        oldest = (now - timedelta(days=self.retention_days)).strftime("%Y-%m-%d")
        removed = 0
        for kind in KINDS:
            base = f"{self.root}/kind={kind}"
            selector = pafs.FileSelector(base, allow_not_found=True)
            for info in self.fs.get_file_info(selector):
                match = _DATE.match(info.base_name)
                if info.type == pafs.FileType.Directory and match and match.group(1) < oldest:
                    self.fs.delete_dir(info.path)
                    removed += 1
        return removed
