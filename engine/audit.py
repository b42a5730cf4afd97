"""Audit records: who asked what and how it went, with every raw device id replaced by its
pseudonym (or by nothing) and no credential in them; and counts per time window for what is too
frequent to record one call at a time (refused requests, gRPC ingest calls).

A record is a dict with the fields of FIELDS; `params` is a dict until it is stored (JSON).
Everything here is pure: time comes in as arguments, pseudonyms as a mapping.
"""

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

# the stored fields, in the order of the ClickHouse table's columns (clickhouse/store.py)
FIELDS = (
    "ts",  # ms: when the request arrived; a window's start for counts
    "source",  # http | grpc | cli
    "key_id",  # the API key's id; "" without one (refused, device tokens, the CLI)
    "role",  # viewer | admin | ingest | device | ""
    "os_user",  # user@host of a CLI command
    "method",  # the HTTP method ("" for gRPC and the CLI)
    "route",  # the route's template, the gRPC method or the CLI command
    "params",  # the parameters (JSON), device ids as pseudonyms
    "status",  # HTTP status, gRPC status code, or the CLI's exit status
    "calls",  # 1, or the calls a window's count stands for
    "duration_ms",  # a request's time; the sum over a window's calls
    "bytes_out",  # the response body's bytes
    "rows",  # rows a history query gave
)
DEFAULTS = {
    "key_id": "",
    "role": "",
    "os_user": "",
    "method": "",
    "params": {},
    "status": 0,
    "calls": 1,
    "duration_ms": 0.0,
    "bytes_out": 0,
    "rows": 0,
}

DEVICE_PARAMS = frozenset({"device_id"})  # path or query parameters naming a device
TOKEN_PARAM = "token_id"  # DELETE /v1/admin/tokens/{token_id}: a token id, a token or a device
REDACTED = "[redacted]"
MAX_PARAMS = 32
MAX_NAME_CHARS = 64
MAX_VALUE_CHARS = 256
MAX_DEVICE_ID_BYTES = 128  # as engine/validation.py bounds a ping's device id
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# an API key (occ_<role>_...) anywhere in a value, or a device token (dev2.<claims>.<mac>, and
# the earlier dev.<id>.<mac>): its claims hold the raw device id
_CREDENTIAL = re.compile(
    r"occ_(?:viewer|admin|ingest)_[\w-]{8,}|(?:^|[^\w.])dev2?\.[\w.+@:-]*\.[\w-]{16,}"
)
_TOKEN_ID = re.compile(r"tok_[0-9a-f]{32}")


def redact(value: str) -> str:
    """`value` cut to MAX_VALUE_CHARS, or REDACTED if it holds a key or a device token."""
    if _CREDENTIAL.search(value):
        return REDACTED
    return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "…"


def request_params(
    path_params: Mapping[str, str], query_string: str
) -> tuple[dict[str, str | None], dict[str, str]]:
    """(params, devices) of a request: its path and query parameters (the path's win), bounded,
    credentials redacted, and every value naming a device moved to `devices` (name -> raw
    value) and left None in `params` until `with_pseudonyms` puts its pseudonym there."""
    params: dict[str, str | None] = {}
    devices: dict[str, str] = {}
    query = dict(parse_qsl(query_string, keep_blank_values=True))
    as_device = query.get("device", "").lower() in ("1", "true", "yes")
    for name, value in [*query.items(), *path_params.items()]:
        name = str(name)[:MAX_NAME_CHARS]
        if name not in params and len(params) >= MAX_PARAMS:
            continue
        value = str(value)
        if name in DEVICE_PARAMS or (
            name == TOKEN_PARAM and (as_device or not _TOKEN_ID.fullmatch(value))
        ):
            if _CREDENTIAL.search(value):  # a token given for a token id: never looked up
                params[name] = REDACTED
                devices.pop(name, None)
                continue
            params[name] = None
            devices[name] = value
            continue
        params[name] = redact(value)
        devices.pop(name, None)
    return params, devices


def lookups(devices: Mapping[str, str]) -> set[str]:
    """The values of `devices` worth asking the id directory about."""
    return {v for v in devices.values() if v and len(v.encode()) <= MAX_DEVICE_ID_BYTES}


def with_pseudonyms(
    params: Mapping[str, str | None],
    devices: Mapping[str, str],
    pseudonyms: Mapping[str, str | None],
) -> dict[str, str | None]:
    """`params` with each device parameter set to its device's pseudonym, or None when the
    id directory has no such device (never seen, or forgotten): never the raw value."""
    out = dict(params)
    for name, raw in devices.items():
        out[name] = pseudonyms.get(raw)
    return out


def record(ts: int, source: str, route: str, **fields) -> dict:
    """A record with every field of FIELDS (DEFAULTS for those not given)."""
    unknown = fields.keys() - set(FIELDS)
    if unknown:
        raise ValueError(f"not audit fields: {', '.join(sorted(unknown))}")
    out = {**DEFAULTS, **fields, "ts": int(ts), "source": source, "route": route}
    out["params"] = dict(out["params"])
    return out


def http_method(method: str) -> str:
    """The method as recorded: one of METHODS, else "other" (a client may send any word)."""
    return method if method in METHODS else "other"


class WindowCounts:
    """Calls counted per window of `window_ms` and per key (the fields that name what was
    counted: source, key id, role, method, route, status and fixed params). A window's counts
    are handed out as records once it has ended, or all at once when the process stops. Memory
    holds the keys of the open windows, at most `max_keys` per window (beyond it, calls are
    counted under route "other")."""

    def __init__(self, window_ms: int, max_keys: int = 10_000):
        if window_ms <= 0:
            raise ValueError("the window must be positive")
        self.window_ms = int(window_ms)
        self.max_keys = max_keys
        self._open: dict[int, dict[tuple, dict]] = {}

    def add(self, now_ms: int, key: tuple, duration_ms: float = 0.0, **counts: int) -> None:
        """One call of `key` = (source, key_id, role, method, route, status, params items) at
        `now_ms`, with the numbers to sum (`calls` is 1 unless given)."""
        start = now_ms - now_ms % self.window_ms
        window = self._open.setdefault(start, {})
        slot = window.get(key)
        if slot is None:
            if len(window) >= self.max_keys:
                key = (*key[:4], "other", key[5], ())
                slot = window.get(key)
            if slot is None:
                slot = window[key] = {"calls": 0, "duration_ms": 0.0}
        slot["calls"] += counts.pop("calls", 1)
        slot["duration_ms"] += duration_ms
        for name, n in counts.items():
            slot[name] = slot.get(name, 0) + n

    def closed(self, now_ms: int) -> list[dict]:
        """The records of every window that ended by `now_ms`, taken out."""
        ended = [s for s in self._open if s + self.window_ms <= now_ms]
        return [r for s in sorted(ended) for r in self._records(s, self._open.pop(s))]

    def everything(self) -> list[dict]:
        """The records of every window, open ones included, taken out (at shutdown)."""
        return [r for s in sorted(self._open) for r in self._records(s, self._open.pop(s))]

    @staticmethod
    def _records(start: int, window: dict[tuple, dict]) -> list[dict]:
        out = []
        for (source, key_id, role, method, route, status, fixed), slot in window.items():
            calls, duration = slot.pop("calls"), slot.pop("duration_ms")
            out.append(
                record(
                    start,
                    source,
                    route,
                    key_id=key_id,
                    role=role,
                    method=method,
                    status=status,
                    params={**dict(fixed), **slot},
                    calls=calls,
                    duration_ms=duration,
                )
            )
        return out
