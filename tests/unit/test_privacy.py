"""The privacy floor: no two viewer answers can be differenced into a count below k."""

from collections import defaultdict
from itertools import combinations

import h3
from h3.api import basic_int as h3i
from hypothesis import given
from hypothesis import strategies as st

from engine.cells import cell_of, parent
from engine.privacy import (
    area_pairs,
    base_pairs,
    filter_released,
    floored,
    floored_part,
    lift_to,
    merge_floored,
    merge_pairs,
    released,
    released_by_levels,
    subset_counts,
)

BASE = 9
TOP = 5  # the coarsest resolution the properties look at
PLACEMENT = 7
# two res-6 roots, far apart, and every base cell under them: 686 cells over five levels
ROOTS = [cell_of(52.66, -8.63, 6), cell_of(52.26, -8.93, 6)]
CELLS = sorted(c for root in ROOTS for c in h3i.cell_to_children(root, BASE))

counts_st = st.dictionaries(st.sampled_from(CELLS), st.integers(1, 7), max_size=80)
k_st = st.integers(2, 6)


def all_levels(counts: dict[int, int], k: int) -> dict[int, dict[int, int]]:
    """Released counts (above 0) at every resolution from TOP to BASE."""
    return {r: released(area_pairs(counts, BASE, r, r, k)) for r in range(TOP, BASE + 1)}


def gap_ok(gap: int, k: int) -> bool:
    return gap == 0 or gap >= k


def check_rule(levels: dict[int, dict[int, int]], k: int, shown) -> None:
    """For any two resolutions r < r2 and the cells `shown(r, cell)` at each: a shown parent's
    released count minus its shown descendants' is 0 or at least k."""
    for r, r2 in combinations(sorted(levels), 2):
        below: dict[int, int] = defaultdict(int)
        for c, n in levels[r2].items():
            if shown(r2, c):
                below[parent(c, r)] += n
        for p, n in levels[r].items():
            if shown(r, p):
                assert gap_ok(n - below[p], k), (r, r2, p, n, below[p], k)


@given(counts_st, k_st, st.randoms(use_true_random=False))
def test_a_shown_parent_minus_its_shown_children_is_zero_or_at_least_k(counts, k, rng):
    levels = all_levels(counts, k)
    check_rule(levels, k, lambda r, c: True)
    # any areas: a random subset of the cells of each answer
    chosen = {(r, c) for r, cells in levels.items() for c in cells if rng.random() < 0.6}
    check_rule(levels, k, lambda r, c: (r, c) in chosen)


@given(counts_st, k_st, st.randoms(use_true_random=False))
def test_a_released_count_depends_on_the_cell_only_never_on_the_area(counts, k, rng):
    levels = all_levels(counts, k)
    for r in range(TOP, BASE + 1):
        ancestors = {parent(c, r) for c in counts}
        kept = {a for a in ancestors if rng.random() < 0.5}
        part = released(area_pairs(counts, BASE, r, r, k, kept.__contains__))
        assert part == {c: n for c, n in levels[r].items() if c in kept}


@given(counts_st, k_st)
def test_released_counts_are_floored_at_the_base_never_above_the_truth_and_exact_above_k(counts, k):
    levels = all_levels(counts, k)
    assert levels[BASE] == {c: n for c, n in counts.items() if n >= k}
    for r in range(TOP, BASE):
        for p, n in levels[r].items():
            true = sum(m for c, m in counts.items() if parent(c, r) == p)
            assert k <= n <= true
    if all(n >= k for n in counts.values()):  # nothing to hide: the exact counts
        for r in range(TOP, BASE + 1):
            true = defaultdict(int)
            for c, n in counts.items():
                true[parent(c, r)] += n
            assert levels[r] == dict(true)


@given(counts_st, k_st, st.integers(1, 3), st.randoms(use_true_random=False))
def test_sharded_answers_equal_the_whole_tree(counts, k, shards, rng):
    """Cells placed on shards by their parent at PLACEMENT: each shard's part, merged and
    lifted, equals the computation over all counts at once."""
    owner = {p: rng.randrange(shards) for p in {parent(c, PLACEMENT) for c in CELLS}}
    parts: list[dict[int, int]] = [{} for _ in range(shards)]
    for c, n in counts.items():
        parts[owner[parent(c, PLACEMENT)]][c] = n
    levels = all_levels(counts, k)
    for r in range(TOP, BASE + 1):
        level = max(r, PLACEMENT)
        pieces = [floored_part(p, BASE, r, level, k) for p in parts]
        assert merge_floored(pieces, level, r, k) == levels[r]


@given(counts_st, k_st, st.randoms(use_true_random=False))
def test_cells_split_over_shards_still_obey_the_rule(counts, k, rng):
    """Mid-rebalance a cell's devices may sit on two shards: the sums still obey the rule."""
    parts: list[dict[int, int]] = [{}, {}]
    for c, n in counts.items():
        a = rng.randint(0, n)
        parts[0][c], parts[1][c] = a, n - a
    levels = {
        r: released(merge_pairs(area_pairs(p, BASE, r, r, k) for p in parts))
        for r in range(TOP, BASE + 1)
    }
    check_rule(levels, k, lambda r, c: True)


def test_the_attack_two_at_res_9_three_at_res_8_is_closed():
    """A viewer sees 2 at res 9 and 3 at res 8: a cell with 1 device is revealed. Now the
    res-8 cell reads 2."""
    a, b = h3i.cell_to_children(parent(CELLS[0], 8), BASE)[:2]
    counts = {a: 2, b: 1}
    old = {r: {parent(c, r): 0 for c in counts} for r in (8, 9)}  # the floor before
    for c, n in counts.items():
        for r in (8, 9):
            old[r][parent(c, r)] += n
    old = {r: {c: n for c, n in cells.items() if n >= 2} for r, cells in old.items()}
    assert old[8][parent(a, 8)] - sum(old[9].values()) == 1  # the leak

    levels = all_levels(counts, 2)
    assert levels[9] == {a: 2}
    for r in range(TOP, 9):
        assert levels[r] == {parent(a, r): 2}
    # two hidden children together reach k: the parent shows them, as a group of at least k
    c = h3i.cell_to_children(parent(CELLS[0], 8), BASE)[2]
    levels = all_levels({a: 2, b: 1, c: 1}, 2)
    assert levels[9] == {a: 2} and levels[8] == {parent(a, 8): 4}


def test_a_level_hides_what_its_children_hid_until_it_sums_to_k():
    # k = 3; under one res-7 cell, two res-8 cells each hiding 2 devices in res-9 cells of 1
    p7 = parent(CELLS[0], 7)
    c8 = h3i.cell_to_children(p7, 8)[:2]
    counts = {}
    for c in c8:
        kids = h3i.cell_to_children(c, 9)
        counts |= {kids[0]: 3, kids[1]: 1, kids[2]: 1}
    levels = all_levels(counts, 3)
    assert levels[8] == dict.fromkeys(c8, 3)  # 2 hidden each: below k
    assert levels[7] == {p7: 10}  # 4 hidden together: shown
    assert floored(2, 3) == 0 and floored(3, 3) == 3


# -- minute aggregates: distinct devices, a device may visit several cells of a minute --------

visits_st = st.lists(st.sets(st.sampled_from(CELLS[:60]), min_size=1, max_size=3), max_size=40)


def distinct_levels(visits: list[set[int]]) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for r in range(TOP, BASE + 1):
        n: dict[int, int] = defaultdict(int)
        for cells in visits:
            for p in {parent(c, r) for c in cells}:
                n[p] += 1
        out[r] = dict(n)
    return out


@given(visits_st, k_st, st.randoms(use_true_random=False))
def test_minute_aggregates_obey_the_rule_too(visits, k, rng):
    true = distinct_levels(visits)
    levels = {r: released(released_by_levels(true, BASE, r, k)) for r in range(TOP, BASE + 1)}
    assert levels[BASE] == {c: n for c, n in true[BASE].items() if n >= k}
    chosen = {(r, c) for r, cells in levels.items() for c in cells if rng.random() < 0.6}
    check_rule(levels, k, lambda r, c: True)
    check_rule(levels, k, lambda r, c: (r, c) in chosen)
    for r in range(TOP, BASE):
        for p, n in levels[r].items():
            # never below what the children show; the truth itself when it is above that by k
            shown = sum(m for c, m in levels[r + 1].items() if parent(c, r) == p)
            assert n == shown or n == true[r][p] >= shown + k


def test_a_device_that_moved_between_children_is_not_counted_below_them():
    a, b = h3i.cell_to_children(parent(CELLS[0], 8), BASE)[:2]
    visits = [{a, b}, {a, b}, {a}]  # two devices in both cells during the minute
    true = distinct_levels(visits)
    assert true[8][parent(a, 8)] == 3 and true[9] == {a: 3, b: 2}
    levels = released(released_by_levels(true, BASE, 8, 2))
    assert levels == {parent(a, 8): 5}  # the sum of the children shown, not 3


@given(counts_st, k_st, st.randoms(use_true_random=False))
def test_the_vectorised_lift_equals_the_scalar_one(counts, k, rng):
    kept = {parent(c, TOP) for c in counts if rng.random() < 0.7}
    for level in range(TOP, BASE + 1):
        scalar = lift_to(base_pairs(counts, k), BASE, level, k)
        assert area_pairs(counts, BASE, level, level, k) == scalar
        assert area_pairs(counts, BASE, TOP, level, k, kept.__contains__) == {
            c: p for c, p in scalar.items() if parent(c, TOP) in kept
        }
    assert area_pairs({CELLS[0]: 0}, BASE, TOP, TOP, k) == {}


def test_pairs_lift_one_resolution_at_a_time():
    a = CELLS[0]
    pairs = lift_to(base_pairs({a: 1}, 2), BASE, 6, 2)
    assert pairs == {parent(a, 6): (1, 0)}
    assert h3.get_resolution(h3.int_to_str(next(iter(pairs)))) == 6


# -- attribute filters ---------------------------------------------------------------------------

ATTRS = [("fleet", "bus"), ("colour", "red"), ("door", "rear")]
pings_st = st.lists(  # devices, each with pings, each ping with some of ATTRS
    st.lists(st.sets(st.sampled_from(range(len(ATTRS)))), min_size=1, max_size=3),
    max_size=30,
)


def brute_count(devices: list[list[set[int]]], subset: set[int]) -> int:
    return sum(any(subset <= ping for ping in pings) for pings in devices)


def mask_sets(devices: list[list[set[int]]]) -> dict[tuple[int, ...], int]:
    out: dict[tuple[int, ...], int] = defaultdict(int)
    for pings in devices:
        out[tuple(sorted({sum(1 << i for i in ping) for ping in pings}))] += 1
    return out


@given(pings_st)
def test_subset_counts_count_devices_with_a_ping_matching_every_attribute(devices):
    counts = subset_counts(mask_sets(devices), len(ATTRS))
    for s in range(1 << len(ATTRS)):
        assert counts[s] == brute_count(devices, {i for i in range(len(ATTRS)) if s >> i & 1})


@given(pings_st, k_st)
def test_two_answered_filters_one_within_the_other_differ_by_zero_or_at_least_k(devices, k):
    counts = subset_counts(mask_sets(devices), len(ATTRS))
    answered = [s for s in counts if filter_released(counts, s, k)]
    for s in answered:
        assert counts[s] >= k
        for wider in answered:
            if wider & s == wider and wider != s:  # fewer attributes: more devices
                assert gap_ok(counts[wider] - counts[s], k), (s, wider, counts)


def test_a_filter_is_withheld_when_its_complement_is_small():
    # ten devices, nine on buses, one not: "fleet=bus" would reveal the one
    devices = [[{0}]] * 9 + [[set()]]
    counts = subset_counts(mask_sets(devices), 1)
    assert counts == {0: 10, 1: 9}
    assert filter_released(counts, 0, 2) and not filter_released(counts, 1, 2)
    # nor can a narrower filter reach it through the withheld one (bus and red vs none)
    devices = [[{0, 1}]] * 9 + [[set()]]
    counts = subset_counts(mask_sets(devices), 2)
    assert counts[3] == 9 and counts[2] == 9 and counts[1] == 9
    assert not filter_released(counts, 3, 2)
