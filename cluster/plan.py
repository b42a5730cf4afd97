"""What a rebalance or a scale will do, decided before anything is done: the shards to start,
to hand devices off, to list again and to retire, and what the new actors would cost."""

from dataclasses import dataclass

from clients.errors import Unavailable
from clients.family import blocking
from state.topology import Topology

PRICING_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Plan:
    """The rebalance from a committed layout to `goal` (cluster/rebalance.py runs it)."""

    goal: dict
    start_cells: tuple[str, ...]  # cell shards the goal adds, started first
    start_users: tuple[str, ...]  # then the user shards it adds
    view_cells: tuple[str, ...]  # cell shards that take the goal's ring: old and new
    view_spaces: tuple[str, ...]
    hand_off: tuple[str, ...]  # every user shard of the committed layout
    relist: tuple[str, ...]  # every user shard of the goal, once it is committed
    retire_users: tuple[str, ...]  # user shards the goal no longer has
    retire_cells: tuple[str, ...]

    @property
    def checkpoint(self) -> tuple[str, ...]:
        """The user shards that checkpoint after the commit (so no handoff is replayed)."""
        return (*self.relist, *self.retire_users)

    @property
    def retired(self) -> tuple[str, ...]:
        return (*self.retire_users, *self.retire_cells)


def plan_of(now: Topology, goal: dict) -> Plan:
    def added(family: str) -> tuple[str, ...]:
        return tuple(n for n in goal[family] if n not in getattr(now, family))

    def dropped(family: str) -> tuple[str, ...]:
        return tuple(n for n in getattr(now, family) if n not in goal[family])

    return Plan(
        goal=goal,
        start_cells=added("cell_shards"),
        start_users=added("user_shards"),
        view_cells=(*now.cell_shards, *added("cell_shards")),
        view_spaces=tuple(goal["space_shards"]),
        hand_off=tuple(now.user_shards),
        relist=tuple(goal["user_shards"]),
        retire_users=dropped("user_shards"),
        retire_cells=dropped("cell_shards"),
    )


def price(
    users,
    cells,
    handlers,
    user_shards: int | None,
    cell_shards: int | None,
    ingest_handlers: int | None,
) -> dict[str, tuple[int, int]]:
    """kind → (actors a scale would start, bytes one of them measures now: the largest
    resident memory of its kind), for the kinds it adds. `users` and `cells`: clients of the
    committed layout's shards (`stats_all`); `handlers`: the ingest handlers' (`names`, `rss`).
    Unavailable when one does not answer within PRICING_TIMEOUT_S."""
    adding: dict[str, tuple[int, int]] = {}
    try:
        for kind, wanted, family in (
            ("user shards", user_shards, users),
            ("cell shards", cell_shards, cells),
        ):
            have = len(family.names())
            if wanted is not None and wanted > have:
                stats = blocking(family.stats_all(), PRICING_TIMEOUT_S)
                adding[kind] = (wanted - have, max(s["rss_bytes"] for s in stats))
        names = handlers.names() if ingest_handlers is not None else []
        if names and ingest_handlers > len(names):
            sizes = handlers.rss(names, PRICING_TIMEOUT_S)
            adding["ingest handlers"] = (ingest_handlers - len(names), max(sizes))
    except TimeoutError as exc:
        raise Unavailable(f"a shard did not answer within {PRICING_TIMEOUT_S:g} s") from exc
    return adding
