"""Consistent-hash ring placing users, cells and spaces on shards."""

import bisect
import hashlib
from collections.abc import Iterable, Sequence

from engine.cells import parent

_MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64 finaliser: spreads structured ints (H3 ids) over the ring."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def hash_str(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Maps 64-bit key hashes to node names; adding a node moves about 1/N of the keys.

    Immutable: a rebalance builds a new ring and compares owners with `moved`.
    """

    __slots__ = ("_nodes", "_owners", "_points", "vnodes")

    def __init__(self, nodes: Iterable[str], vnodes: int = 128):
        self._nodes = tuple(sorted(set(nodes)))
        if not self._nodes:
            raise ValueError("a ring needs at least one node")
        self.vnodes = vnodes
        points = sorted(
            (hash_str(f"{node}#{i}"), node) for node in self._nodes for i in range(vnodes)
        )
        self._points = [p for p, _ in points]
        self._owners = [n for _, n in points]

    @property
    def nodes(self) -> tuple[str, ...]:
        return self._nodes

    def node_for_hash(self, h: int) -> str:
        i = bisect.bisect_right(self._points, h)
        return self._owners[i % len(self._owners)]

    def moved(self, other: "HashRing", hashes: Sequence[int]) -> list[int]:
        """Hashes whose owner differs between this ring and `other`."""
        return [h for h in hashes if self.node_for_hash(h) != other.node_for_hash(h)]


class Placement:
    """Where each kind of key lives: users by pseudonym, cells by a coarse parent, spaces by id."""

    __slots__ = ("cells", "placement_res", "spaces", "users")

    def __init__(
        self,
        user_shards: Sequence[str],
        cell_shards: Sequence[str],
        space_shards: Sequence[str],
        placement_res: int = 6,
    ):
        self.users = HashRing(user_shards)
        self.cells = HashRing(cell_shards)
        self.spaces = HashRing(space_shards)
        self.placement_res = placement_res

    def user_shard(self, device: int) -> str:
        # pseudonyms are already uniform 64-bit hashes
        return self.users.node_for_hash(device)

    def cell_key(self, cell: int) -> int:
        return mix64(parent(cell, self.placement_res))

    def cell_shard(self, cell: int) -> str:
        return self.cells.node_for_hash(self.cell_key(cell))

    def space_shard(self, space: str) -> str:
        return self.spaces.node_for_hash(hash_str(space))
