"""Credentials: API keys with roles (hashed in Redis) and device tokens (access/tokens.py), and
the authenticator every ingest handler and API replica checks them with."""

import asyncio
import hashlib
import logging
import secrets
import time
from typing import NamedTuple

import redis
import redis.asyncio

from access import revocation, tokens
from engine.recent import RecentCache
from state.wal import PREFIX

log = logging.getLogger(__name__)

ROLES = ("viewer", "admin", "ingest")
KEYS = f"{PREFIX}:keys"  # SHA-256 of the key -> "role|created (s)|label"
KEYS_USED = f"{PREFIX}:keys:used"  # key id -> last use (ms), written at most once a minute
KEY_ID_CHARS = 12
KEY_RECHECK_S = 10.0  # a key known to a process is looked up again this often
USED_EVERY_S = 60.0


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(hashed: str) -> str:
    """A key's id: the start of its hash (which reveals nothing of the key)."""
    return hashed[:KEY_ID_CHARS]


class KeyStore:
    """API keys: only their SHA-256 is stored, with the role, creation time and a label; a key's
    id is the start of that hash."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def create(self, role: str, label: str = "") -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if "|" in label or len(label) > 200:
            raise ValueError("a label is at most 200 characters, without |")
        key = f"occ_{role}_{secrets.token_urlsafe(24)}"
        self.client.hset(KEYS, key_hash(key), f"{role}|{int(time.time())}|{label}")
        return key

    def role(self, key: str) -> str | None:
        found = self.lookup(key_hash(key))
        return found[1] if found else None

    def lookup(self, hashed: str) -> tuple[str, str] | None:
        """(id, role) of the key with this hash, or None."""
        raw = self.client.hget(KEYS, hashed)
        return (key_id(hashed), raw.decode().split("|", 1)[0]) if raw else None

    def list(self) -> list[dict]:
        """Every key: id, role, label, created and last used (ms; None if not seen in use)."""
        used = {k.decode(): int(v) for k, v in self.client.hgetall(KEYS_USED).items()}
        out = []
        for hashed, raw in self.client.hgetall(KEYS).items():
            role, created, label = [*raw.decode().split("|", 2), "", ""][:3]
            kid = key_id(hashed.decode())
            out.append(
                {
                    "id": kid,
                    "role": role,
                    "label": label,
                    "created": int(created or 0) * 1000,
                    "last_used": used.get(kid),
                }
            )
        return sorted(out, key=lambda k: (k["created"], k["id"]))

    def revoke(self, key: str) -> bool:
        """Revoke a key given in full."""
        return self._revoke(key_hash(key))

    def revoke_id(self, kid: str) -> bool:
        """Revoke the key with this id."""
        if len(kid) != KEY_ID_CHARS:
            return False
        matches = [h for h in self.client.hkeys(KEYS) if h.decode().startswith(kid)]
        return len(matches) == 1 and self._revoke(matches[0].decode())

    def _revoke(self, hashed: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(KEYS, hashed)
        pipe.hdel(KEYS_USED, key_id(hashed))
        gone = bool(pipe.execute()[0])
        if gone:
            revocation.bump(self.client)
        return gone


class Credential(NamedTuple):
    """Who a bearer credential is: its role (`device` for a device token), the device a token
    is bound to, and the key's or token's id."""

    role: str
    device: str | None
    id: str


class Authenticator:
    """Resolves bearer credentials. API keys are looked up in Redis and kept for KEY_RECHECK_S;
    device tokens are verified in memory. Every cached answer is dropped and the token
    revocations reloaded when the credentials generation changes, which `follow` (a task of
    the caller's event loop) checks every CHECK_EVERY_S; without it, `resolve` checks when due.
    """

    def __init__(self, client: redis.Redis, secret: bytes):
        self.client = client
        self.keys = KeyStore(client)
        self.tokens = tokens.TokenVerifier(secret)
        # bounded: a client sending a new random key on every call grows nothing for long
        self._keys: RecentCache[str, tuple] = RecentCache(int(KEY_RECHECK_S * 1000), 10_000)
        self._used: dict[str, float] = {}  # key id -> when its use was last written
        self._unwritten: dict[str, int] = {}  # key id -> last use (ms) not written yet
        self.followed = False
        self._generation = revocation.current(client)
        self._checked = time.monotonic()
        self._kids_loaded = 0.0
        self.tokens.load(tokens.read_state(client))

    # -- answers ------------------------------------------------------------------------------

    def resolve(self, credential: str) -> Credential:
        """The credential's role, device and id; raises tokens.Refused."""
        if not self.followed:
            self.check()
        if credential.startswith("dev"):
            try:
                claims = self.tokens.verify(credential)
            except tokens.UnknownKid:
                self._reload_kids()
                claims = self.tokens.verify(credential)
            return Credential("device", claims.device, claims.token_id)
        found = self.key(credential)
        if found is None:
            raise tokens.Refused("unknown or revoked key")
        return Credential(found[1], None, found[0])

    def key(self, key: str) -> tuple[str, str] | None:
        """(id, role) of an API key, or None for an unknown or revoked one."""
        if not self.followed:
            self.check()
        hashed = key_hash(key)
        now = time.monotonic()
        hit = self._keys.get(hashed, int(now * 1000))
        if hit is None or now - hit[0] > KEY_RECHECK_S:
            hit = (now, self.keys.lookup(hashed))
            self._keys.put(hashed, hit, int(now * 1000))
        found = hit[1]
        if found is not None and now - self._used.get(found[0], -USED_EVERY_S) >= USED_EVERY_S:
            self._used[found[0]] = now
            self._unwritten[found[0]] = int(time.time() * 1000)
        return found

    def _reload_kids(self) -> None:
        """A token signed with a kid not loaded: a rotation this process has not heard of yet
        (at most four reads a second, whatever the clients send)."""
        if time.monotonic() - self._kids_loaded < revocation.CHECK_EVERY_S:
            return
        self._kids_loaded = time.monotonic()
        self.tokens.load(tokens.read_state(self.client))

    # -- revocations -------------------------------------------------------------------------

    def check(self) -> bool:
        """Read the generation if CHECK_EVERY_S has passed; on a change, drop and reload. True
        if it changed."""
        if time.monotonic() - self._checked < revocation.CHECK_EVERY_S:
            return False
        self._checked = time.monotonic()
        generation = revocation.current(self.client)
        if self._unwritten:
            used, self._unwritten = self._unwritten, {}
            self.client.hset(KEYS_USED, mapping=used)
        if generation == self._generation:
            return False
        self._apply(generation, tokens.read_state(self.client))
        return True

    async def follow(self, client: redis.asyncio.Redis, on_change=None) -> None:
        """Check the generation every CHECK_EVERY_S, forever; after a change, await
        `on_change()` (an ingest handler ends the streams of revoked credentials)."""
        self.followed = True
        while True:
            await asyncio.sleep(revocation.CHECK_EVERY_S)
            self._checked = time.monotonic()
            try:
                generation = await client.get(revocation.GENERATION)
                if generation != self._generation:
                    revoked = self._apply(generation, await tokens.read_state_async(client))
                    if revoked and on_change is not None:
                        await on_change()
                if self._unwritten:
                    used, self._unwritten = self._unwritten, {}
                    await client.hset(KEYS_USED, mapping=used)
            except redis.RedisError:  # nothing can be revoked while Redis is unreachable
                continue
            except Exception:
                log.exception("checking for revoked credentials failed")

    def _apply(self, generation: bytes | None, state: list[dict]) -> bool:
        """Take a new generation; False when it is gone rather than changed: Redis lost its
        data (a revocation always writes one). Cached keys then stay until the history actor
        has written the keys back (and a generation with them), so that devices and gateways
        are not refused meanwhile."""
        self._generation = generation
        self.tokens.load(state)
        if generation is None:
            return False
        self._keys.clear()
        return True
