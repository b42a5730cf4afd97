"""Routing of pings, membership changes and door events to shards by the placement rings."""

from collections import defaultdict
from collections.abc import Iterable, Sequence

from engine.presence import NOWHERE, Move
from engine.ring import Placement, hash_str
from engine.user import SpaceMove

Update = tuple[int, tuple, int]  # (device, places on the receiving shard, seq)


def group_by_user_shard(devices: Sequence[int], placement: Placement) -> dict[str, list[int]]:
    """Indices into `devices`, per user shard, in their original order."""
    groups: dict[str, list[int]] = defaultdict(list)
    shard_of = placement.user_shard
    for i, device in enumerate(devices):
        groups[shard_of(device)].append(i)
    return groups


def route_cell_moves(moves: Iterable[Move], placement: Placement) -> dict[str, list[Update]]:
    """Per cell shard, the membership updates: the new cell's shard gets the device's new cell,
    the old cell's shard (when another) gets an empty membership. One update per shard a move."""
    out: dict[str, list[Update]] = defaultdict(list)
    shard_of = placement.cell_shard
    for device, old, new, seq, *_ in moves:
        new_shard = shard_of(new) if new != NOWHERE else None
        if old != NOWHERE and shard_of(old) != new_shard:
            out[shard_of(old)].append((device, (), seq))
        if new_shard is not None:
            out[new_shard].append((device, (new,), seq))
    return out


def route_space_moves(moves: Iterable[SpaceMove], placement: Placement) -> dict[str, list[Update]]:
    """Per space shard, the device's new membership among that shard's spaces."""
    out: dict[str, list[Update]] = defaultdict(list)
    shard_of = placement.space_shard
    for device, old, new, seq, *_ in moves:
        shards = {shard_of(s) for s in old} | {shard_of(s) for s in new}
        for shard in sorted(shards):
            out[shard].append((device, tuple(s for s in new if shard_of(s) == shard), seq))
    return out


def door_shard(sensor: str, placement: Placement) -> str:
    """Door events are partitioned by sensor; every space shard holds all door metadata."""
    return placement.spaces.node_for_hash(hash_str(sensor))
