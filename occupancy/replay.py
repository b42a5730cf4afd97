"""`occupancy replay FILE`: archived raw pings (or door events) through the same engine code,
into the history store: a fixed engine bug can be re-applied to the past.

Pings are applied in their arrival order (the export's `received` and log order), with each
arrival's receive time as the engine's `now`, so applied/late and presence come out as they did
live. The history written is what the snapshotter writes: presence pieces and the raw rows
(with the same dedup tokens on a second run of the same file: nothing doubles).

`occupancy replay --lake --from --to` (`replay_lake`) does the same with a period of the lake
(clickhouse/lake.py), whose rows carry their arrival columns as archived: the period's raw rows
are deleted and written again as they were, with the presence the engine makes of them.
"""

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clickhouse.lake import Lake
from clickhouse.store import HistoryStore
from engine.cells import index_batch
from engine.pseudonym import parse_pseudonym
from engine.record import ARRIVAL, Column, PingRecord
from engine.spec import EngineSpec
from engine.user import UserEngine

CHUNK = 50_000  # rows between history writes


def read_table(path: Path) -> pa.Table:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    if path.suffix.lower() in (".arrow", ".feather"):
        import pyarrow.feather as feather

        return feather.read_table(path)
    raise ValueError(f"{path.name}: replay reads .parquet, .csv or .arrow files")


def _arrival_order(table: pa.Table) -> pa.Table:
    keys = [k for k in ("received", "shard", "wal_ms", "wal_seq", "idx") if k in table.column_names]
    if "received" not in keys:
        raise ValueError("a raw ping file needs a `received` column (receive time, ms)")
    return table.sort_by([(k, "ascending") for k in keys])


KeysFor = Callable[[Sequence[str]], dict[str, int]]  # raw ids -> their pseudonyms


def _device_keys(table: pa.Table, keys_for: KeysFor) -> list[int]:
    if "device" in table.column_names and pa.types.is_integer(table.column("device").type):
        return table.column("device").to_pylist()  # pseudonyms as numbers, as the lake has them
    if "device" in table.column_names:  # pseudonyms, as exports carry them
        return [parse_pseudonym(str(d)) for d in table.column("device").to_pylist()]
    if "device_id" in table.column_names:  # raw ids: named by the id directory, as in ingest
        raw = [str(d) for d in table.column("device_id").to_pylist()]
        keys = keys_for(list(dict.fromkeys(raw)))
        return [keys[d] for d in raw]
    raise ValueError("a raw ping file needs a `device` (pseudonym) or `device_id` column")


def replay_pings(
    table: pa.Table,
    store: HistoryStore,
    spec: EngineSpec,
    keys_for: KeysFor,
    spaces: dict[str, dict],
    until: int | None = None,
    progress: Callable[[int], None] = lambda n: None,
    label: str = "replay",
    rebuild: bool = False,
) -> dict:
    """Replay `table` and write its history; `until` is the engine time at the end (default:
    the last receive time), which clips intervals still open then. `keys_for` gives the
    pseudonyms of raw ids (the deployment's id directory, `id_directory.keys_for`).

    `rebuild` (the lake's rows, into a store whose rows of the period were deleted): the raw
    rows keep the arrival columns they came with and are written without a dedup token (a
    token seen before would drop them), and presence pieces get versions newer than any the
    snapshotter wrote, so they replace those of the same interval."""
    table = _arrival_order(table)
    engine = UserEngine(spec)
    for space, definition in spaces.items():
        engine.define_space(space, definition["polygon"], definition.get("name", ""))
    devices = _device_keys(table, keys_for)
    ts = table.column("ts").to_numpy().astype(np.int64).tolist()
    received = table.column("received").to_numpy().astype(np.int64).tolist()
    lats = pc.cast(table.column("lat"), pa.float64()).to_numpy().tolist()
    lngs = pc.cast(table.column("lng"), pa.float64()).to_numpy().tolist()
    cells = index_batch(lats, lngs, spec.res).tolist()
    optional = {c.name: _optional(table, c) for c in PingRecord.optional()}
    pings = PingRecord(devices, ts, cells, lats, lngs, **optional)
    digest = hashlib.sha256(f"{label}:{len(ts)}:{ts[:3]}:{received[-3:]}".encode()).hexdigest()[:16]
    n, applied, written, now = len(ts), 0, 0, 0
    start = 0
    while start < n:
        end = start
        now = received[start]
        while end < n and received[end] == now:  # one arrival: one engine call
            end += 1
        flags = engine.ingest(
            devices[start:end], ts[start:end], cells[start:end], lats[start:end], lngs[start:end],
            now,
        )  # fmt: skip
        engine.drain_moves()  # no live views in replay
        applied += sum(flags)
        if end - written >= CHUNK or end == n:
            if end == n and until is not None:
                now = max(now, until)
            engine.advance(now)
            engine.drain_moves()
            columns = dict(pings.take(range(written, end)).archived())
            columns |= _arrival(table, received, written, end, rebuild)
            store.write_pings(columns, "" if rebuild else f"{label}:{digest}:{written}:{end}")
            mark, history = engine.history_export(now)
            store.write_presence(history, time.time_ns() if rebuild else now)
            engine.history_confirm(mark)
            engine.evict(now)  # what history now holds leaves memory, as in a user shard
            progress(end - written)
            written = end
        start = end
    return {"pings": n, "applied": applied, "late": n - applied, "until": now}


def _arrival(table: pa.Table, received: list[int], lo: int, hi: int, keep: bool) -> dict:
    """The arrival columns of rows [lo, hi): those the table has (`keep`), or made up from the
    receive times (a file of one's own has none)."""
    if keep:
        return {name: table.column(name)[lo:hi].to_pylist() for name, _ in ARRIVAL}
    return {
        "received": received[lo:hi],
        "shard": ["replay"] * (hi - lo),
        "wal_ms": received[lo:hi],
        "wal_seq": [0] * (hi - lo),
        "idx": list(range(lo, hi)),
    }


def _optional(table: pa.Table, column: Column) -> dict[int, Any]:
    """An optional attribute's values from the file's column of its name, where a row has one."""
    if column.clickhouse not in table.column_names:
        return {}
    cast = type(column.default)
    out = {}
    for i, value in enumerate(table.column(column.clickhouse).to_pylist()):
        if isinstance(value, list):  # a map column reads as [(key, value), ...]
            value = dict(value)
        elif isinstance(value, str) and cast is dict:  # CSV: a map's text form is not parsed
            continue
        if value:
            out[i] = cast(value)
    return out


def replay_doors(
    table: pa.Table, store: HistoryStore, label: str = "replay", rebuild: bool = False
) -> dict:
    """Door events (sensor, ts, direction[, received]) into the history store; `rebuild`: the
    lake's rows, as they were archived (shard, log id), with no dedup token."""
    for column in ("sensor", "ts", "direction"):
        if column not in table.column_names:
            raise ValueError(f"a door event file needs a `{column}` column")
    sensors = [str(s) for s in table.column("sensor").to_pylist()]
    ts = table.column("ts").to_pylist()
    directions = table.column("direction").to_pylist()
    received = table.column("received").to_pylist() if "received" in table.column_names else ts
    n = len(sensors)
    shards = table.column("shard").to_pylist() if rebuild else ["replay"] * n
    wal_ids = table.column("wal_id").to_pylist() if rebuild else [f"{i}" for i in range(n)]
    rows = [
        (s, int(t), int(r), int(d), shard, wal_id)
        for s, t, r, d, shard, wal_id in zip(
            sensors, ts, received, directions, shards, wal_ids, strict=True
        )
        if d in (1, -1)
    ]
    digest = hashlib.sha256(f"{label}:{len(rows)}:{ts[:3]}".encode()).hexdigest()[:16]
    for i in range(0, len(rows), CHUNK):
        store.write_door_events(rows[i : i + CHUNK], "" if rebuild else f"{label}:{digest}:{i}")
    return {"door_events": len(rows)}


def replay_lake(
    lake: Lake,
    store: HistoryStore,
    spec: EngineSpec,
    spaces: dict[str, dict],
    start: int,
    end: int,
    until: int | None = None,
    progress: Callable[[int], None] = lambda n: None,
) -> dict:
    """Rebuild the history of [start, end) (event time) from the lake: the period's raw pings
    and door events deleted from the store, then the lake's rows of the period written again
    through the same engine code (`replay_pings`, `replay_doors`) with the presence they yield.
    Safe to repeat. A device's presence is rebuilt from its pings in the period: one seen just
    before `start` has its interval begin again at its first ping in the period."""
    pings = lake.read("pings", start, end)
    doors = lake.read("door_events", start, end)
    store.delete_raw(start, end)
    out: dict = {"from": start, "to": end, "pings": 0, "door_events": 0}
    if pings is not None and pings.num_rows:
        result = replay_pings(
            pings, store, spec, _no_raw_ids, spaces, until, progress, "lake", rebuild=True
        )
        out |= result
    if doors is not None and doors.num_rows:
        out |= replay_doors(doors, store, "lake", rebuild=True)
    return out


def _no_raw_ids(ids: Sequence[str]) -> dict[str, int]:
    raise ValueError("the lake holds pseudonyms only")
