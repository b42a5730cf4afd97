"""Top-N and heatmaps over live cell counts, with the two-stage merge across shards."""

from collections.abc import Iterable, Mapping

from engine.cells import in_bbox, rollup
from engine.geo import BBox


def area_counts(counts: Mapping[int, int], res: int, bbox: BBox | None) -> dict[int, int]:
    """Counts of base cells rolled up to `res`, keeping cells whose centre lies in `bbox`."""
    rolled = rollup(counts.items(), res)
    if bbox is None:
        return rolled
    return {cell: n for cell, n in rolled.items() if in_bbox(cell, bbox)}


def ranked(counts: Mapping[int, int], n: int) -> list[tuple[int, int]]:
    """Cells by count descending, ties by cell id ascending; the first `n`."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def shard_top(
    counts: Mapping[int, int], n: int, res: int, bbox: BBox | None, whole: bool
) -> list[tuple[int, int]]:
    """One shard's part of a top-N query.

    `whole` says that every cell at `res` lives on a single shard (res >= the placement
    resolution): then the shard's own top `n` suffices. Otherwise a cell's count is spread over
    shards and the shard returns all its partial counts, which `merge_top` adds up.
    """
    partial = area_counts(counts, res, bbox)
    return ranked(partial, n) if whole else list(partial.items())


def merge_top(parts: Iterable[Iterable[tuple[int, int]]], n: int) -> list[tuple[int, int]]:
    """Exact top-N from the shards' parts."""
    total: dict[int, int] = {}
    for part in parts:
        for cell, count in part:
            total[cell] = total.get(cell, 0) + count
    return ranked(total, n)


def merge_counts(parts: Iterable[Mapping[int, int]]) -> dict[int, int]:
    total: dict[int, int] = {}
    for part in parts:
        for cell, count in part.items():
            total[cell] = total.get(cell, 0) + count
    return total
