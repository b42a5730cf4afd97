"""The next shard layout a rebalance aims at (pure: no Redis or Ray needed)."""

import pytest

from state.layout import layout_of, target, with_layout
from state.topology import Topology


def _topology(users: int, cells: int, version: int = 0) -> Topology:
    return Topology(
        redis_url="redis://unused",
        user_shards=tuple(f"user-{i}" for i in range(users)),
        cell_shards=tuple(f"cell-{i}" for i in range(cells)),
        version=version,
    )


def test_growing_keeps_every_shard_and_names_the_new_ones_next():
    goal = target(_topology(2, 2, version=4), 3, None)
    assert goal["user_shards"] == ["user-0", "user-1", "user-2"]
    assert goal["cell_shards"] == ["cell-0", "cell-1"]
    assert goal["space_shards"] == ["space-0"]
    assert goal["version"] == 5


def test_shrinking_drops_the_last_shards():
    goal = target(_topology(3, 4), 2, 1)
    assert goal["user_shards"] == ["user-0", "user-1"]
    assert goal["cell_shards"] == ["cell-0"]


def test_a_layout_round_trips_through_a_topology():
    t = _topology(3, 2, version=7)
    assert with_layout(_topology(1, 1), layout_of(t)) == t


@pytest.mark.parametrize("users, cells", [(0, None), (None, 0), (-1, 2)])
def test_at_least_one_shard_per_family(users, cells):
    with pytest.raises(ValueError):
        target(_topology(2, 2), users, cells)
