"""Webhooks, the pure part: what a hook definition may be, the events of space moves and of
counts crossing a threshold, their ids, the signature of a delivery and the retry schedule."""

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from typing import NamedTuple
from urllib.parse import urlsplit

EVENTS = ("enter", "exit", "above", "below")
MEMBERSHIP = frozenset({"enter", "exit"})  # from the user shards, per device
LEVELS = frozenset({"above", "below"})  # from the spaces' exact counts, per hook
SECRET_BYTES = (16, 256)
MAX_URL = 2048
MAX_SPACES = 100
SIGNATURE_HEADER = "X-Occupancy-Signature"


class HookSpec(NamedTuple):
    """A hook as stored: where to POST, with which secret, for which spaces and events."""

    url: str
    secret: str
    spaces: tuple[str, ...]
    events: tuple[str, ...]
    threshold: int | None = None

    def to_dict(self) -> dict:
        return self._asdict() | {"spaces": list(self.spaces), "events": list(self.events)}

    @classmethod
    def from_dict(cls, d: dict) -> "HookSpec":
        return cls(d["url"], d["secret"], tuple(d["spaces"]), tuple(d["events"]), d["threshold"])


def check_hook(
    url: str, secret: str, spaces: Iterable[str], events: Iterable[str], threshold: int | None
) -> HookSpec:
    """The definition, normalised (spaces and events once each, events in `EVENTS` order), or
    ValueError saying what is wrong. Whether the spaces exist is the caller's to check."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL:
        raise ValueError(f"url must be an http or https URL of at most {MAX_URL} characters")
    low, high = SECRET_BYTES
    if not low <= len(secret.encode()) <= high:
        raise ValueError(f"secret must be {low} to {high} bytes")
    spaces = tuple(dict.fromkeys(spaces))
    if not 1 <= len(spaces) <= MAX_SPACES:
        raise ValueError(f"spaces must name 1 to {MAX_SPACES} spaces")
    events = set(events)
    if not events or not events <= set(EVENTS):
        raise ValueError(f"events must be a non-empty subset of {', '.join(EVENTS)}")
    levels = bool(events & LEVELS)
    if levels and (threshold is None or isinstance(threshold, bool) or threshold < 0):
        raise ValueError("above and below need a threshold, a whole number of at least 0")
    if not levels and threshold is not None:
        raise ValueError("a threshold goes with above or below only")
    return HookSpec(url, secret, spaces, tuple(e for e in EVENTS if e in events), threshold)


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def membership_id(device: int, space: str, kind: str, at: int) -> str:
    """An enter or exit's id: a function of the device's key, the space, the kind and the time
    of the change (its ping's ts, or when its presence ran out), so that a shard replaying its
    log after a restart makes the very same id, and receivers drop the copy."""
    return _digest("m", device, space, kind, at)


def level_id(hook: str, space: str, kind: str, threshold: int, at: int) -> str:
    """An above or below's id: each crossing is decided once (its state is stored with it)."""
    return _digest("l", hook, space, kind, threshold, at)


def sign(secret: str, body: bytes) -> str:
    """The `X-Occupancy-Signature` value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver checks (constant time)."""
    return hmac.compare_digest(sign(secret, body), signature)


def backoff_s(failures: int, base_s: float, cap_s: float, jitter: float) -> float:
    """Seconds before the next attempt after `failures` failed ones in a row (>= 1):
    `base_s * 2**(failures-1)`, capped at `cap_s`, then scaled by `jitter` in [0, 1) to between
    half and all of it, so that receivers coming back are not met by every sender at once."""
    if failures < 1:
        return 0.0
    step = min(cap_s, base_s * 2.0 ** min(failures - 1, 60))
    return step * (0.5 + 0.5 * jitter)


class SpaceEvent(NamedTuple):
    kind: str  # enter | exit
    space: str
    device: int
    at: int  # ms: the ping's ts, or when the device's presence ran out


def space_events(moves: Iterable, watched: frozenset[str]) -> Iterator[SpaceEvent]:
    """The enters and exits of watched spaces in space moves `(device, old, new, seq, at)`."""
    for device, old, new, _seq, at in moves:
        for space in old:
            if space in watched and space not in new:
                yield SpaceEvent("exit", space, device, at)
        for space in new:
            if space in watched and space not in old:
                yield SpaceEvent("enter", space, device, at)


def crossing(above: bool | None, count: int, threshold: int) -> str | None:
    """ "above" when a count goes from <= threshold to > threshold, "below" back; None when
    its side did not change. A level never seen (`above` None) counts as at or below."""
    now_above = count > threshold
    if now_above == bool(above):
        return None
    return "above" if now_above else "below"
