"""Deployment settings from `OCC_*` environment variables, in one frozen object."""

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from engine.spec import EngineSpec
from engine.validation import Limits


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a deployment; `from_env` reads `OCC_<NAME>` for each field."""

    data_dir: Path = Path(".occupancy")
    redis_url: str = ""  # empty: an embedded redis-server in the data dir
    durability: str = "everysec"  # everysec | always: when an acked ping is fsynced
    clickhouse_url: str = ""  # empty: embedded ClickHouse (chDB) in the data dir
    grpc_port: int = 50051
    http_port: int = 8000
    http_ingress: str = "haproxy"  # haproxy | direct | proxy (occupancy/http_ingress.py)
    h3_res: int = 9
    presence_ttl_s: float = 120.0
    max_skew_s: float = 30.0
    max_ping_age_s: float = 7 * 86_400.0  # older pings and door events are ts_too_old
    live_minutes: int = 2  # minute aggregates kept live; devices that left stay this long
    device_rate_limit: float = 10.0  # pings a second per device token (a minute's burst); 0: off
    key_rate_limit: float = 0.0  # pings a second per ingest key; 0: off
    snapshot_interval_s: float = 10.0
    raw_retention_days: int = 60
    aggregate_retention_days: int = 2557  # 7 years
    audit_retention_days: int = 400
    audit_window_s: float = 60.0  # refused requests and gRPC calls are counted per window
    archive_backlog_max_mb: float = 256.0  # Redis's share for history; beyond it, spill files
    checkpoint_interval_s: float = 5.0
    user_shards: int = 2
    cell_shards: int = 2
    space_shards: int = 1
    ingest_handlers: int = 2
    ingest_nice: int = 0  # >0 lowers ingest handlers' CPU priority below the query path
    # empty (and no secret_file): generated once and kept in the data dir; never in a repr
    secret: str = field(default="", repr=False)
    secret_file: str = ""  # a file holding the secret (0600), instead of OCC_SECRET
    k_min: int = 0
    # TLS for gRPC ingest and HTTP (occupancy/tls.py): PEM files; a client CA asks gRPC clients
    # for certificates (mutual TLS)
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_ca: str = (
        ""  # the CA clients of this deployment (CLI, simulator) trust; empty: the system's
    )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then `OCC_*` variables, then explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f"OCC_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def tls(self):
        from occupancy.tls import Tls

        return Tls(self.tls_cert, self.tls_key, self.tls_client_ca)

    def engine_spec(self) -> EngineSpec:
        return EngineSpec(
            res=self.h3_res,
            ttl_ms=int(self.presence_ttl_s * 1000),
            live_minutes=self.live_minutes,
            limits=Limits(
                max_skew_ms=int(self.max_skew_s * 1000),
                max_age_ms=int(self.max_ping_age_s * 1000),
            ),
        )


def _convert(name: str, kind, raw: str):
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (Path, "Path"):
            return Path(raw)
        return raw
    except ValueError:
        raise ValueError(f"OCC_{name.upper()}={raw!r} is not a valid {kind}") from None
