"""Whether the actors a scale request would start fit in the memory the nodes have left.

Engine actors ask Ray for no CPU and no memory (they are long-lived and mostly idle between
batches), so Ray never refuses to start one: a request for 60 shards on a small machine would
start them all and swap. Before a scale starts anything, each new actor is priced at what one
of its kind measures now (its resident memory), and the total must fit in HEADROOM of the
memory the alive nodes have available.
"""

from clients import cluster as nodes

HEADROOM = 0.8  # of the nodes' available memory that new actors may take


class DoesNotFit(Exception):
    pass


def check(adding: dict[str, tuple[int, int]], available: int) -> None:
    """`adding`: kind → (actors to start, bytes one of them measures). Raises DoesNotFit with
    the figures when they would take more than HEADROOM of `available` bytes."""
    need = sum(n * size for n, size in adding.values() if n > 0)
    if need <= HEADROOM * available:
        return
    parts = ", ".join(
        f"{n} {kind} × {size / 2**20:,.0f} MiB" for kind, (n, size) in adding.items() if n > 0
    )
    raise DoesNotFit(
        f"the new actors would need {need / 2**30:.1f} GiB ({parts}, as measured now) and the "
        f"nodes have {available / 2**30:.1f} GiB available ({HEADROOM:.0%} of it may be used); "
        "add nodes or ask for fewer"
    )


def available_bytes() -> int:
    """The memory available on every alive node, summed (one small task per node)."""
    return nodes.available_bytes()
