"""Device tokens: bound to one device id, with an expiry, a token id and the id of the key that
signed them; revocable one by one or for every token of a device.

A token is `dev2.<claims>.<mac>`: the claims (device id `sub`, signing key id `kid`, token id
`jti`, issue time `iat` and expiry `exp`, both in ms) as base64url JSON, and HMAC-SHA256 of
`dev2.<claims>` under the signing key of `kid` (access/keyring.py). A handler verifies one
without a look-up; the revocations it checks are in memory, reloaded from Redis whenever the
credentials generation changes (access/revocation.py).

Signing keys (`occ:signing`: kid -> created, retired): the newest one not retired signs new
tokens; older ones verify the tokens they signed until those expire; a retired one verifies
none (for a key believed leaked). A token id carries its token's expiry and a check value, so
revoking by id needs no record of the tokens issued: the revocation is kept until that expiry,
and a mistyped id is refused.
"""

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson
import redis
import redis.asyncio

from access import revocation
from access.keyring import device_tag_key, hkdf, signing_key
from state.wal import PREFIX

TOKEN_PREFIX = "dev2"
TOKEN_ID_PREFIX = "tok_"
DEFAULT_TTL_S = 365 * 86_400
MAX_TTL_S = 5 * 365 * 86_400
MAX_TOKEN_CHARS = 1_024
MAX_DEVICE_ID_BYTES = 128  # as engine/validation.py bounds a ping's device id
SIGNING = f"{PREFIX}:signing"  # kid -> {"created": ms, "retired": ms or 0}
REVOKED = f"{PREFIX}:tokens:revoked"  # token id -> its expiry (ms): kept until then
REVOKED_DEVICES = f"{PREFIX}:tokens:revoked-devices"  # device tag -> ms: tokens issued until then
_TOKEN_ID_LABEL = b"occupancy/v1 token id"
_LEGACY = "dev."


class Refused(Exception):
    """A credential that does not authenticate; the message says why (for the caller)."""


class UnknownKid(Refused):
    """Signed correctly with a key id this process has not loaded yet (just rotated)."""


@dataclass(frozen=True, slots=True)
class Claims:
    device: str
    kid: str
    token_id: str
    issued_ms: int
    expires_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now_ms() -> int:
    return int(time.time() * 1000)


# -- token ids -------------------------------------------------------------------------------------


def _id_check(secret: bytes, body: bytes) -> bytes:
    return hmac.new(hkdf(secret, _TOKEN_ID_LABEL), body, hashlib.sha256).digest()[:5]


def new_token_id(secret: bytes, expires_ms: int) -> str:
    """`tok_` and 32 hex digits: the expiry (s), 6 random bytes and a 5-byte check value."""
    body = (expires_ms // 1000).to_bytes(5, "big") + secrets.token_bytes(6)
    return TOKEN_ID_PREFIX + (body + _id_check(secret, body)).hex()


def token_id_expiry(secret: bytes, token_id: str) -> int | None:
    """The expiry (ms, rounded up to the second) a token id carries; None if it is not a
    token id of this deployment."""
    if not token_id.startswith(TOKEN_ID_PREFIX) or len(token_id) != len(TOKEN_ID_PREFIX) + 32:
        return None
    try:
        raw = bytes.fromhex(token_id[len(TOKEN_ID_PREFIX) :])
    except ValueError:
        return None
    body, check = raw[:11], raw[11:]
    if not hmac.compare_digest(_id_check(secret, body), check):
        return None
    return (int.from_bytes(body[:5], "big") + 1) * 1000


# -- the token itself ------------------------------------------------------------------------------


def sign(secret: bytes, claims: Claims) -> str:
    payload = _b64(
        orjson.dumps(
            {
                "sub": claims.device,
                "kid": claims.kid,
                "jti": claims.token_id,
                "iat": claims.issued_ms,
                "exp": claims.expires_ms,
            }
        )
    )
    signed = f"{TOKEN_PREFIX}.{payload}"
    mac = hmac.new(signing_key(secret, claims.kid), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{_b64(mac)}"


def parse(token: str) -> tuple[Claims, str, bytes] | None:
    """(claims, the signed part, the mac) of a well-formed token, unverified; else None."""
    if len(token) > MAX_TOKEN_CHARS or not token.startswith(TOKEN_PREFIX + "."):
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        data = orjson.loads(_unb64(parts[1]))
        mac = _unb64(parts[2])
        claims = Claims(data["sub"], data["kid"], data["jti"], data["iat"], data["exp"])
    except (ValueError, KeyError, TypeError):
        return None
    strings = (claims.device, claims.kid, claims.token_id)
    if not all(isinstance(s, str) for s in strings):
        return None
    if not all(type(n) is int for n in (claims.issued_ms, claims.expires_ms)):
        return None
    return claims, f"{parts[0]}.{parts[1]}", mac


def device_tag(tag_key: bytes, device_id: str) -> str:
    """How the revocation list names a device: a keyed hash, never its raw id."""
    return hmac.new(tag_key, device_id.encode(), hashlib.sha256).hexdigest()[:32]


# -- signing keys ----------------------------------------------------------------------------------


class SigningKeys:
    """The registry of signing key ids in Redis (the keys derive from the secret)."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def all(self) -> dict[str, dict]:
        """kid -> {"created": ms, "retired": ms or 0}, oldest first."""
        rows = {k.decode(): orjson.loads(v) for k, v in self.client.hgetall(SIGNING).items()}
        return dict(sorted(rows.items(), key=lambda kv: (kv[1]["created"], kv[0])))

    def current(self) -> str:
        """The kid that signs new tokens: the newest not retired (made now if there is none)."""
        live = [kid for kid, row in self.all().items() if not row["retired"]]
        return live[-1] if live else self.rotate()

    def rotate(self) -> str:
        """A new signing key, which signs every token from now on; the kid."""
        kid = secrets.token_hex(4)
        # strictly newer than every kid so far, whatever the clocks of the callers
        newest = max((row["created"] for row in self.all().values()), default=0)
        created = max(_now_ms(), newest + 1)
        self.client.hset(SIGNING, kid, orjson.dumps({"created": created, "retired": 0}))
        revocation.bump(self.client)
        return kid

    def retire(self, kid: str) -> None:
        """Tokens signed with `kid` stop verifying (a key believed leaked). Not the current
        key: rotate first."""
        rows = self.all()
        if kid not in rows:
            raise KeyError(f"no signing key {kid!r}")
        if kid == self.current():
            raise ValueError(f"{kid} signs new tokens; rotate the signing key first")
        rows[kid]["retired"] = rows[kid]["retired"] or _now_ms()
        self.client.hset(SIGNING, kid, orjson.dumps(rows[kid]))
        revocation.bump(self.client)


# -- issuing and revoking --------------------------------------------------------------------------


class DeviceTokens:
    """Issues and revokes device tokens (for the CLI and the admin API)."""

    def __init__(self, client: redis.Redis, secret: bytes):
        self.client = client
        self.secret = secret
        self.signing = SigningKeys(client)

    def issue(self, device_id: str, ttl_s: float = DEFAULT_TTL_S) -> tuple[str, Claims]:
        if not device_id or len(device_id.encode()) > MAX_DEVICE_ID_BYTES:
            raise ValueError(f"a device id is 1 to {MAX_DEVICE_ID_BYTES} bytes")
        if not 0 < ttl_s <= MAX_TTL_S:
            raise ValueError(f"a token's lifetime is above 0 and at most {MAX_TTL_S // 86_400} d")
        now = _now_ms()
        expires = now + int(ttl_s * 1000)
        claims = Claims(
            device_id, self.signing.current(), new_token_id(self.secret, expires), now, expires
        )
        return sign(self.secret, claims), claims

    def revoke(self, what: str, device: bool = False) -> tuple[str, str]:
        """Revoke a token (by its id, or the token itself) or, with `device` or when `what` is
        neither, every token issued to that device id so far: ("token", token id) or
        ("device", device id). Raises ValueError for an id of the token form that is not one
        of this deployment's (mistyped)."""
        if not device:
            parsed = parse(what)
            token_id = parsed[0].token_id if parsed else what
            expires = token_id_expiry(self.secret, token_id)
            if expires is not None:
                self._revoke_token(token_id, expires)
                return "token", token_id
            if parsed or what.startswith(TOKEN_ID_PREFIX):
                raise ValueError(f"{token_id[:40]!r} is not a token id of this deployment")
        if not what or len(what.encode()) > MAX_DEVICE_ID_BYTES:
            raise ValueError(f"a device id is 1 to {MAX_DEVICE_ID_BYTES} bytes")
        tag = device_tag(device_tag_key(self.secret), what)
        self.client.hset(REVOKED_DEVICES, tag, _now_ms())
        revocation.bump(self.client)
        return "device", what

    def _revoke_token(self, token_id: str, expires: int) -> None:
        now = _now_ms()
        expired = [k for k, v in self.client.hgetall(REVOKED).items() if int(v) < now]
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(REVOKED, token_id, expires)
        if expired:  # a revocation is not needed past its token's expiry
            pipe.hdel(REVOKED, *expired)
        pipe.execute()
        revocation.bump(self.client)


# -- verifying -------------------------------------------------------------------------------------


def read_state(client: redis.Redis) -> list[dict]:
    pipe = client.pipeline(transaction=True)
    for name in (SIGNING, REVOKED, REVOKED_DEVICES):
        pipe.hgetall(name)
    return pipe.execute()


async def read_state_async(client: redis.asyncio.Redis) -> list[dict]:
    pipe = client.pipeline(transaction=True)
    for name in (SIGNING, REVOKED, REVOKED_DEVICES):
        pipe.hgetall(name)
    return await pipe.execute()


class TokenVerifier:
    """Verifies device tokens against the signing keys and revocations it holds in memory.

    `load` only adds: a revocation is never undone, so a Redis that lost its data (and has the
    revocations back from the history actor's copy a moment later) opens nothing meanwhile."""

    def __init__(self, secret: bytes):
        self.secret = secret
        self._tag_key = device_tag_key(secret)
        self._keys: dict[str, bytes] = {}
        self.kids: set[str] = set()
        self.retired: set[str] = set()
        self.revoked: dict[str, int] = {}
        self.devices: dict[str, int] = {}

    def load(self, state: list[dict]) -> None:
        signing, revoked, devices = state
        now = _now_ms()
        for kid, raw in signing.items():
            kid = kid.decode()
            self.kids.add(kid)
            if orjson.loads(raw)["retired"]:
                self.retired.add(kid)
        for token_id, expires in revoked.items():
            if int(expires) >= now:
                self.revoked[token_id.decode()] = int(expires)
        self.revoked = {k: v for k, v in self.revoked.items() if v >= now}
        for tag, cutoff in devices.items():
            tag = tag.decode()
            self.devices[tag] = max(int(cutoff), self.devices.get(tag, 0))

    def verify(self, token: str, now_ms: int | None = None) -> Claims:
        """The claims of a valid token; raises Refused (UnknownKid for a kid not loaded)."""
        parsed = parse(token)
        if parsed is None:
            if token.startswith(_LEGACY):
                raise Refused(
                    "a device token of an earlier format (no expiry); "
                    "get a new one (`occupancy token`)"
                )
            raise Refused("invalid device token")
        claims, signed, mac = parsed
        key = self._keys.get(claims.kid)
        if key is None:
            key = signing_key(self.secret, claims.kid)
            if claims.kid in self.kids:  # only known kids are kept: a client's inventions are not
                self._keys[claims.kid] = key
        if not hmac.compare_digest(hmac.new(key, signed.encode(), hashlib.sha256).digest(), mac):
            raise Refused("invalid device token")
        if claims.kid in self.retired:
            raise Refused("device token signed with a retired key; get a new one")
        if claims.kid not in self.kids:
            raise UnknownKid("device token signed with an unknown key")
        now = _now_ms() if now_ms is None else now_ms
        if now >= claims.expires_ms:
            raise Refused("device token expired; get a new one")
        if claims.token_id in self.revoked:
            raise Refused("device token revoked")
        if self.devices:
            cutoff = self.devices.get(device_tag(self._tag_key, claims.device))
            if cutoff is not None and claims.issued_ms <= cutoff:
                raise Refused("device token revoked")
        return claims
