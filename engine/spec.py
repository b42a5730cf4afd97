"""The engine's parameters, fixed for a deployment."""

from dataclasses import dataclass, field

from engine.validation import Limits


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What every shard of one deployment agrees on."""

    res: int = 9
    ttl_ms: int = 120_000
    limits: Limits = field(default_factory=Limits)
    placement_res: int = 6  # cells are placed on shards by their parent at this resolution
    minute_levels: int = 3  # minute aggregates at res, res-2, res-4, ...
    dwell_days: int = 2  # days of dwell kept in live state (history keeps all)
    live_minutes: int = 2  # minutes of minute aggregates kept in live state (history keeps all)

    def __post_init__(self) -> None:
        if not 0 <= self.res <= 15:
            raise ValueError("res must be between 0 and 15")
        if not 0 <= self.placement_res <= self.res:
            raise ValueError("placement_res must be between 0 and res")
        if self.ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        if self.dwell_days < 1 or self.live_minutes < 1:
            raise ValueError("dwell_days and live_minutes must be at least 1")

    @property
    def minute_res(self) -> tuple[int, ...]:
        """Resolutions that keep minute aggregates, base first."""
        return tuple(r for r in range(self.res, -1, -2))[: self.minute_levels]

    def to_dict(self) -> dict:
        return {
            "res": self.res,
            "ttl_ms": self.ttl_ms,
            "max_skew_ms": self.limits.max_skew_ms,
            "max_age_ms": self.limits.max_age_ms,
            "placement_res": self.placement_res,
            "minute_levels": self.minute_levels,
            "dwell_days": self.dwell_days,
            "live_minutes": self.live_minutes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "EngineSpec":
        d = dict(d)
        default = Limits()
        limits = Limits(
            max_skew_ms=d.pop("max_skew_ms", default.max_skew_ms),
            max_age_ms=d.pop("max_age_ms", default.max_age_ms),
        )
        return cls(limits=limits, **d)
