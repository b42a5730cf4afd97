"""Credentials: device tokens bound to one device id; API keys with roles, hashed in Redis."""

import base64
import hashlib
import hmac
import secrets
import time

import redis

from actors.wal import PREFIX
from engine.recent import RecentCache

ROLES = ("viewer", "admin", "ingest")
KEYS = f"{PREFIX}:keys"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def device_token(secret: bytes, device_id: str) -> str:
    """`dev.<id>.<mac>`: verifiable by any ingest handler without a lookup."""
    mac = hmac.new(secret, b"device-token\x00" + device_id.encode(), hashlib.sha256).digest()
    return f"dev.{_b64(device_id.encode())}.{_b64(mac[:18])}"


def verify_device_token(secret: bytes, token: str) -> str | None:
    """The device id the token is bound to, or None if it is not a valid device token."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "dev":
        return None
    try:
        device_id = _unb64(parts[1]).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return device_id if hmac.compare_digest(device_token(secret, device_id), token) else None


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """API keys: only their SHA-256 is stored, with the role and a label."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def create(self, role: str, label: str = "") -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        key = f"occ_{role}_{secrets.token_urlsafe(24)}"
        self.client.hset(KEYS, key_hash(key), f"{role}|{int(time.time())}|{label}")
        return key

    def role(self, key: str) -> str | None:
        raw = self.client.hget(KEYS, key_hash(key))
        return raw.decode().split("|", 1)[0] if raw else None

    def revoke(self, key: str) -> bool:
        return bool(self.client.hdel(KEYS, key_hash(key)))


class Authenticator:
    """Resolves a bearer token to (role, bound device id or None); caches key look-ups briefly
    so that a revoked key stops working within `ttl_s`."""

    def __init__(self, secret: bytes, keys: KeyStore, ttl_s: float = 10.0):
        self.secret = secret
        self.keys = keys
        self.ttl_s = ttl_s
        # bounded: a client sending a new random token on every call grows nothing for long
        self._cache: RecentCache[str, tuple[float, str | None]] = RecentCache(
            int(ttl_s * 1000), 10_000
        )

    def resolve(self, token: str) -> tuple[str, str | None] | None:
        device = verify_device_token(self.secret, token)
        if device is not None:
            return "device", device
        now = time.monotonic()
        hit = self._cache.get(token, int(now * 1000))
        if hit is None or now - hit[0] > self.ttl_s:
            hit = (now, self.keys.role(token))
            self._cache.put(token, hit, int(now * 1000))
        return (hit[1], None) if hit[1] else None
