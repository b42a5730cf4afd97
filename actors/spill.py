"""Log ranges moved out of Redis into local files while history cannot take them.

When ClickHouse is down for long, every shard log keeps its unarchived entries and Redis's
memory grows with them. Past `OCC_ARCHIVE_BACKLOG_MAX_MB`, the oldest unarchived ranges are
written here (fsynced, then renamed into place), and only then is the log's archive mark moved
past them, so that checkpoints may trim them from Redis. Once the store is back, the files are
archived first, oldest first, with the dedup token their range would have had in Redis, and
deleted after. A file is the commit point of its range: after a crash between the rename and
the mark, `reconcile` moves the mark past every file again.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from state.wal import pack, unpack


def wal_key(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


@dataclass(frozen=True)
class SpilledRange:
    path: Path
    shard: str
    first: str
    last: str

    def load(self) -> tuple[list[tuple[str, dict]], bool]:
        """The range's log entries, and whether its halving had begun."""
        data = unpack(self.path.read_bytes())
        return [(wal_id, entry) for wal_id, entry in data["entries"]], data["halved"]

    def mark_halved(self) -> None:
        entries, _ = self.load()
        _write_atomically(self.path, pack({"entries": entries, "halved": True}))


class Spill:
    """The spilled ranges under `root`, one directory per shard, one file per range."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, shard: str, entries: list[tuple[str, dict]], halved: bool = False) -> int:
        """Store a range durably; returns its size in bytes."""
        first, last = entries[0][0], entries[-1][0]
        data = pack({"entries": [[wal_id, entry] for wal_id, entry in entries], "halved": halved})
        directory = self.root / shard
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomically(directory / f"{first}_{last}.spill", data)
        return len(data)

    def ranges(self, shard: str | None = None) -> list[SpilledRange]:
        """Every spilled range (of one shard), oldest first within a shard."""
        shards = [shard] if shard is not None else self.shards()
        out = []
        for name in shards:
            directory = self.root / name
            if not directory.is_dir():
                continue
            found = []
            for path in directory.glob("*.spill"):
                first, last = path.stem.split("_")
                found.append(SpilledRange(path, name, first, last))
            out += sorted(found, key=lambda r: wal_key(r.first))
        return out

    def shards(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def last(self, shard: str) -> str | None:
        """The newest entry spilled for `shard`, if any."""
        ranges = self.ranges(shard)
        return ranges[-1].last if ranges else None

    def remove(self, spilled: SpilledRange) -> None:
        spilled.path.unlink(missing_ok=True)

    def size_bytes(self) -> int:
        return sum(r.path.stat().st_size for r in self.ranges() if r.path.exists())

    def oldest_ms(self) -> int:
        """The WAL time of the oldest spilled entry; 0 when nothing is spilled."""
        firsts = [wal_key(r.first)[0] for r in self.ranges()]
        return min(firsts) if firsts else 0


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
