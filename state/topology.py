"""What every actor of one deployment is told at creation: names, spec, Redis, placement."""

import time
from dataclasses import dataclass, field

from engine.ring import Placement
from engine.spec import EngineSpec

NAMESPACE = "occupancy"


@dataclass(frozen=True)
class Topology:
    """Shard names and shared settings; plain data so that Ray can ship it to any node. No
    secret: Ray keeps creation arguments in its control store (access/keyring.py)."""

    redis_url: str
    spec: dict = field(default_factory=lambda: EngineSpec().to_dict())
    user_shards: tuple[str, ...] = ("user-0", "user-1")
    cell_shards: tuple[str, ...] = ("cell-0", "cell-1")
    space_shards: tuple[str, ...] = ("space-0",)
    version: int = 0  # the shard layout's version (state/layout.py); grows with each rebalance
    tick_s: float = 0.2
    checkpoint_interval_s: float = 5.0
    namespace: str = NAMESPACE
    # pings (and door events) a second per device token and per ingest key; 0: no limit
    rate_limits: tuple[float, float] = (10.0, 0.0)
    # gRPC ingest's TLS: certificate, key and client CA files (paths; each handler reads them,
    # so they must exist on every node); empty: no TLS (occupancy/tls.py)
    tls: tuple[str, str, str] = ("", "", "")
    # the audit log counts refused requests and gRPC ingest calls per window of this many s
    audit_window_s: float = 60.0
    # webhooks: each hook's outbox stream is capped near this many events (state/hooks.py)
    hook_outbox_max: int = 100_000

    def engine_spec(self) -> EngineSpec:
        return EngineSpec.from_dict(self.spec)

    def placement(self) -> Placement:
        return Placement(
            self.user_shards, self.cell_shards, self.space_shards, self.engine_spec().placement_res
        )


class Clock:
    """Wall-clock milliseconds that never go backwards (the engine needs a monotone `now`)."""

    def __init__(self, start: int = 0):
        self.last = start

    def __call__(self) -> int:
        self.last = max(self.last, int(time.time() * 1000))
        return self.last
