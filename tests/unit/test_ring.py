"""Consistent-hash placement."""

from h3.api import basic_int as h3i

from engine.cells import cell_of, parent
from engine.ring import HashRing, Placement, mix64


def test_same_key_same_node_and_spread():
    ring = HashRing(["a", "b", "c"])
    keys = [mix64(i) for i in range(30_000)]
    owners = [ring.node_for_hash(k) for k in keys]
    assert owners == [ring.node_for_hash(k) for k in keys]
    shares = {n: owners.count(n) / len(keys) for n in ring.nodes}
    assert all(0.2 < s < 0.47 for s in shares.values()), shares


def test_adding_a_node_moves_few_keys_and_only_to_it():
    old, new = HashRing(["a", "b"]), HashRing(["a", "b", "c"])
    keys = [mix64(i) for i in range(30_000)]
    moved = old.moved(new, keys)
    assert 0.2 < len(moved) / len(keys) < 0.45
    assert all(new.node_for_hash(k) == "c" for k in moved)


def test_cells_are_placed_by_their_coarse_parent():
    p = Placement(["u0"], ["c0", "c1", "c2"], ["s0"], placement_res=6)
    a = cell_of(52.6291, -8.6617, 9)
    children = h3i.cell_to_children(parent(a, 6), 9)
    assert len(children) == 343
    assert {p.cell_shard(c) for c in children} == {p.cell_shard(a)}
    # cells of a city spread over every shard
    city = {cell_of(52.6 + i * 0.03, -8.7 + j * 0.05, 9) for i in range(10) for j in range(10)}
    assert {p.cell_shard(c) for c in city} == {"c0", "c1", "c2"}
