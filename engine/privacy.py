"""The privacy floor: the counts a viewer sees, released so that answers cannot be differenced.

A cell's *released* count is computed bottom-up from the base resolution R. At R it is the true
count if that is at least `k`, else 0. A cell P at a coarser resolution has S, the sum of its
children's released counts, and H = true(P) - S, what its children hide between them:
released(P) = S + H when H >= k, else S. So, for every cell, released(P) minus the released
counts of any subset of its children (those shown, the others being 0 or out of view) is 0 or at
least `k`, at any pair of resolutions; and a released count is a function of the cell and the
counts under it only, never of the area asked about.

Live counts are additive (a device is in one base cell): true(P) is the sum of its children's.
Minute aggregates count distinct devices, so a coarse cell's true count is given (`true=`), and
may be less than S when devices moved between its children during the minute: then
released(P) = S, more than true(P).
"""

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from engine.cells import in_bbox, parent, parents_of
from engine.geo import BBox
from engine.topn import merge_counts, ranked

Pair = tuple[int, int]  # (true count, released count)


def floored(count: int, k: int) -> int:
    """A single count under the floor: itself if at least `k`, else 0."""
    return count if count >= k else 0


def base_pairs(counts: Mapping[int, int], k: int) -> dict[int, Pair]:
    """(true, released) of base cells; empty cells are dropped."""
    return {cell: (n, floored(n, k)) for cell, n in counts.items() if n}


def lift(
    pairs: Mapping[int, Pair], res: int, k: int, true: Mapping[int, int] | None = None
) -> dict[int, Pair]:
    """(true, released) at `res` of the parents of `pairs` (cells at `res + 1`).

    True counts are the sums of the children's, or, when `true` is given (distinct counts),
    taken from it. Every parent that has a child in `pairs` is in the answer, and only those.
    """
    sums: dict[int, list[int]] = {}
    for cell, (t, r) in pairs.items():
        p = parent(cell, res)
        acc = sums.get(p)
        if acc is None:
            sums[p] = [t, r]
        else:
            acc[0] += t
            acc[1] += r
    out: dict[int, Pair] = {}
    for p, (t, s) in sums.items():
        if true is not None:
            t = true.get(p, 0)
        hidden = t - s
        out[p] = (t, s + hidden if hidden >= k else s)
    return out


def lift_to(
    pairs: Mapping[int, Pair],
    level: int,
    res: int,
    k: int,
    true_by_res: Mapping[int, Mapping[int, int]] | None = None,
) -> dict[int, Pair]:
    """`pairs` of cells at `level` lifted one resolution at a time to `res` (<= `level`)."""
    out = dict(pairs)
    for r in range(level - 1, res - 1, -1):
        out = lift(out, r, k, None if true_by_res is None else true_by_res[r])
    return out


def area_pairs(
    counts: Mapping[int, int],
    base_res: int,
    res: int,
    level: int,
    k: int,
    keep: Callable[[int], bool] | None = None,
) -> dict[int, Pair]:
    """(true, released) at `level` (res <= level <= base_res) from base-cell `counts`, for the
    cells under those at `res` that `keep` accepts (all without it).

    Only base cells under a kept cell are lifted: the cost is that of the subtrees the answer
    shows. Vectorised (`parents_of`, numpy): the same pairs as `lift_to(base_pairs(...))`,
    which a parity test checks.
    """
    size = len(counts)
    cells = np.fromiter(counts.keys(), np.int64, size)
    true = np.fromiter(counts.values(), np.int64, size)
    chosen = true > 0
    if keep is not None:
        ancestors, index = np.unique(parents_of(cells, res), return_inverse=True)
        kept = np.fromiter((keep(a) for a in ancestors.tolist()), bool, len(ancestors))
        chosen &= kept[index]
    cells, true = cells[chosen], true[chosen]
    shown = np.where(true >= k, true, 0)
    for r in range(base_res - 1, level - 1, -1):
        cells, index = np.unique(parents_of(cells, r), return_inverse=True)
        # float sums are exact for counts below 2^53
        t = np.bincount(index, weights=true, minlength=len(cells)).astype(np.int64)
        s = np.bincount(index, weights=shown, minlength=len(cells)).astype(np.int64)
        shown = np.where(t - s >= k, t, s)
        true = t
    return dict(zip(cells.tolist(), zip(true.tolist(), shown.tolist(), strict=True), strict=True))


def released(pairs: Mapping[int, Pair]) -> dict[int, int]:
    """The cells of `pairs` with a released count above 0, and that count."""
    return {cell: r for cell, (_, r) in pairs.items() if r}


def floored_part(
    counts: Mapping[int, int],
    base_res: int,
    res: int,
    level: int,
    k: int,
    keep: Callable[[int], bool] | None = None,
) -> dict:
    """One shard's part of a floored answer at `res`: (true, released) pairs at `level`, the
    placement resolution, when `res` is coarser (a cell there lives on one shard; the caller
    lifts them), else {cell: released count} for the cells shown."""
    if res == base_res:  # nothing to lift: the floor alone
        return {c: n for c, n in counts.items() if n >= k and (keep is None or keep(c))}
    pairs = area_pairs(counts, base_res, res, level, k, keep)
    return pairs if level > res else released(pairs)


def floored_top(
    counts: Mapping[int, int],
    n: int,
    base_res: int,
    res: int,
    k: int,
    keep: Callable[[int], bool] | None = None,
) -> list[tuple[int, int]]:
    """One shard's top `n` by released count, where every cell at `res` lives on one shard."""
    return ranked(floored_part(counts, base_res, res, res, k, keep), n)


def within(bbox: BBox | None = None, cell: int | None = None) -> Callable[[int], bool] | None:
    """What `area_pairs` keeps: the one `cell`, or the cells whose centre lies in `bbox`
    (every cell without either)."""
    if cell is not None:
        return lambda c: c == cell
    if bbox is None:
        return None
    return lambda c: in_bbox(c, bbox)


def merge_floored(parts: Iterable[Mapping], level: int, res: int, k: int) -> dict[int, int]:
    """Released counts at `res` from the shards' `floored_part`s at `level` (added up, as
    `merge_pairs` adds pairs)."""
    if level == res:
        return merge_counts(parts)
    return released(lift_to(merge_pairs(parts), level, res, k))


def merge_pairs(parts: Iterable[Mapping[int, Pair]]) -> dict[int, Pair]:
    """Shards' pairs added up. Each cell at or above the placement resolution lives on one
    shard, so this only concatenates; were a cell split (mid-rebalance), the sums still obey
    the floor's rule, since each part does and a sum of terms that are 0 or >= k is too."""
    total: dict[int, Pair] = {}
    for part in parts:
        for cell, (t, r) in part.items():
            old = total.get(cell)
            total[cell] = (t, r) if old is None else (old[0] + t, old[1] + r)
    return total


def released_by_levels(
    true_by_res: Mapping[int, Mapping[int, int]], base_res: int, res: int, k: int
) -> dict[int, Pair]:
    """(true, released) at `res` from distinct counts given at every resolution from `res` to
    `base_res` (minute aggregates)."""
    return lift_to(base_pairs(true_by_res[base_res], k), base_res, res, k, true_by_res)


# -- attribute filters --------------------------------------------------------------------------


def subset_counts(mask_sets: Mapping[tuple[int, ...], int], width: int) -> dict[int, int]:
    """Devices per filter: for every subset S of `width` attributes (a bit mask), how many
    devices have a ping matching all of S. `mask_sets` maps the set of masks one device's
    pings matched (sorted) to the number of devices with that set."""
    out = {}
    for s in range(1 << width):
        out[s] = sum(n for masks, n in mask_sets.items() if any(m & s == s for m in masks))
    return out


def filter_released(counts: Mapping[int, int], mask: int, k: int) -> bool:
    """Whether the filter `mask` (of attributes, bits) may be answered: its count is at least
    `k` and, for every filter with one attribute less, that filter may be answered and the
    difference of their counts is 0 or at least `k`.

    By induction any two answered filters one within the other then differ by 0 or at least
    `k` devices (the chain between them has only answered filters). `counts` holds every
    subset of `mask` (`subset_counts`).
    """
    memo: dict[int, bool] = {}

    def ok(s: int) -> bool:
        found = memo.get(s)
        if found is None:
            n = counts[s]
            found = n >= k
            bits = s
            while found and bits:
                bit = bits & -bits
                bits ^= bit
                wider = s ^ bit
                gap = counts[wider] - n
                found = (gap == 0 or gap >= k) and ok(wider)
            memo[s] = found
        return found

    return ok(mask)
