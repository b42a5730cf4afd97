"""The log record of pings: one batch part as columns, from ingest through the WAL to history."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

REQUIRED = object()  # the default of a column every ping carries


@dataclass(frozen=True, slots=True)
class Column:
    """A ping attribute as the archive stores it: the field (its key in a log entry and its name
    on the wire), its `raw_pings` column and ClickHouse type, and what a ping that does not carry
    it holds (`REQUIRED`: every ping carries it)."""

    name: str
    clickhouse: str
    type: str
    default: Any = REQUIRED

    @property
    def optional(self) -> bool:
        return self.default is not REQUIRED


def column(clickhouse: str, type_: str, default: Any = REQUIRED):
    """A field of a record class: a required column is a list (one value a ping), an optional one
    a dict {position: value} of the pings that carry it (most carry none)."""
    meta = {"column": (clickhouse, type_, default)}
    if default is REQUIRED:
        return field(default_factory=list, metadata=meta)
    return field(default_factory=dict, metadata=meta)


# what history stores beside a ping's own attributes: when and where it arrived (the order in
# which pings are applied: log entry, then position in the entry)
ARRIVAL = (
    ("received", "Int64"),
    ("shard", "LowCardinality(String)"),
    ("wal_ms", "Int64"),
    ("wal_seq", "Int64"),
    ("idx", "UInt32"),
)


@dataclass(slots=True)
class PingRecord:
    """Valid pings as columns: what ingest sends a user shard, the shard logs before it applies
    them, and history archives as `raw_pings` rows, one column per field made with `column`.

    A new ping attribute is one more `column` field here (optional, with the value of a ping
    without it), its check in `engine/validation.py` and a migration adding the column; ingest
    reads it from the `Ping` message field of the same name, and the log, the archive, exports
    and replay carry it from the field list.

    Log entries are the fields by name (optional columns only when some ping carries them, as
    {position: value}), with the receive time `now` and a `trace` if the batch is traced. Entries
    of the earlier form, with the optional attributes together under "extra" as
    {position: [attributes, accuracy_m, region]}, read the same.
    """

    dev: list[int] = column("device", "UInt64")  # pseudonyms
    ts: list[int] = column("ts", "Int64")
    cell: list[int] = column("cell", "UInt64")  # at the engine's resolution
    lat: list[float] = column("lat", "Float64")
    lng: list[float] = column("lng", "Float64")
    accuracy_m: dict[int, float] = column("accuracy_m", "Float32", 0.0)
    region: dict[int, str] = column("region", "LowCardinality(String)", "")
    attributes: dict[int, dict[str, str]] = column("attributes", "Map(String, String)", {})
    now: int = 0  # the shard's clock when it took the batch: the rows' `received`
    trace: dict | None = None  # the span context of a traced batch
    version: int | None = None  # the layout version it was routed by (checked, not logged)

    _columns: ClassVar[dict[type, tuple[Column, ...]]] = {}

    @classmethod
    def columns(cls) -> tuple[Column, ...]:
        """The record's columns in field order."""
        found = PingRecord._columns.get(cls)
        if found is None:
            found = PingRecord._columns[cls] = tuple(
                Column(f.name, *f.metadata["column"]) for f in fields(cls) if "column" in f.metadata
            )
        return found

    @classmethod
    def optional(cls) -> tuple[Column, ...]:
        return tuple(c for c in cls.columns() if c.optional)

    @classmethod
    def archive_columns(cls) -> tuple[str, ...]:
        """The `raw_pings` columns history writes: the record's, then the arrival columns."""
        return tuple(c.clickhouse for c in cls.columns()) + tuple(name for name, _ in ARRIVAL)

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: Sequence[int]) -> "PingRecord":
        """The pings at positions `idx`, in that order (a shard's part, the pings kept)."""
        parts: dict[str, Any] = {}
        for c in self.columns():
            values = getattr(self, c.name)
            if c.optional:
                parts[c.name] = {k: values[j] for k, j in enumerate(idx) if j in values}
            else:
                parts[c.name] = [values[j] for j in idx]
        return replace(self, **parts)

    def archived(self) -> Iterator[tuple[str, list]]:
        """(ClickHouse column, values) of the pings' own attributes, a value for every ping."""
        n = len(self)
        for c in self.columns():
            values = getattr(self, c.name)
            if not c.optional:
                yield c.clickhouse, values
            elif not values:
                yield c.clickhouse, [c.default] * n
            else:
                yield c.clickhouse, [values.get(i, c.default) for i in range(n)]

    # -- the log --------------------------------------------------------------------------------

    def to_log(self) -> dict:
        """The log entry (msgpack-able)."""
        entry: dict[str, Any] = {}
        for c in self.columns():
            values = getattr(self, c.name)
            if values or not c.optional:
                entry[c.name] = values
        entry["now"] = self.now
        if self.trace:
            entry["trace"] = self.trace
        return entry

    @classmethod
    def from_log(cls, entry: dict) -> "PingRecord":
        """The record of a log entry of pings (either form)."""
        parts: dict[str, Any] = {}
        for c in cls.columns():
            if c.optional:
                parts[c.name] = entry.get(c.name) or {}
            else:
                parts[c.name] = entry[c.name]
        extra = entry.get("extra")
        if extra:  # the earlier form
            parts["attributes"] = {i: a for i, (a, _, _) in extra.items() if a}
            parts["accuracy_m"] = {i: acc for i, (_, acc, _) in extra.items() if acc}
            parts["region"] = {i: r for i, (_, _, r) in extra.items() if r}
        return cls(**parts, now=entry.get("now", 0), trace=entry.get("trace"))


def is_pings(entry: dict) -> bool:
    """Whether a user shard's log entry holds pings (else it is a control entry)."""
    return "control" not in entry
