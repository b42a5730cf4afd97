"""The deployment's secret and the keys derived from it, each for one purpose.

One secret is configured (OCC_SECRET, or a file named by OCC_SECRET_FILE, or one generated in
the data dir). What uses it:

Device pseudonyms are not among them: they are random, linked to raw ids only by the id
directory (state/id_directory.py).

- **Device-token signing**: one key per key id (`kid`), HKDF-SHA256(secret, label + kid). A new
  kid signs new tokens; tokens signed with an older one verify until they expire or the kid is
  retired (access/tokens.py). A signing key or a token does not reveal the secret.
- **Device tags**: HKDF-SHA256(secret, label), which names a device in the token revocation
  list without its raw id.

Actors never receive the secret as an argument (Ray keeps creation arguments in its control
store): they read it from their environment, OCC_SECRET set for `ray start` on every node, or
OCC_SECRET_FILE, the path of a 0600 file that `occupancy up` puts in the job's runtime env.
"""

import hashlib
import hmac
import os
from pathlib import Path

SECRET_ENV = "OCC_SECRET"
SECRET_FILE_ENV = "OCC_SECRET_FILE"
MIN_SECRET_BYTES = 32
# values the repository's manifests shipped, and the shapes of placeholders left in a template
PLACEHOLDERS = ("change-me-to-a-long-random-secret",)
PLACEHOLDER_WORDS = ("change-me", "changeme", "change_me", "replace-me", "replaceme", "placeholder")

_SIGNING_LABEL = b"occupancy/v1 device-token signing kid="
_DEVICE_TAG_LABEL = b"occupancy/v1 device tag"


class BadSecret(ValueError):
    """The configured secret is a known placeholder or too short, or none can be found."""


def check_secret(value: bytes, source: str) -> bytes:
    """`value` if it may serve as the deployment's secret; raises BadSecret (one line, naming
    `source`) for a placeholder or anything shorter than MIN_SECRET_BYTES."""
    text = value.decode("utf-8", "replace").strip().lower()
    if text in PLACEHOLDERS or any(word in text for word in PLACEHOLDER_WORDS):
        raise BadSecret(
            f"{source} is a placeholder; set a random secret of at least {MIN_SECRET_BYTES} "
            "bytes (e.g. `openssl rand -hex 32`)"
        )
    if len(value) < MIN_SECRET_BYTES:
        raise BadSecret(
            f"{source} is {len(value)} bytes; it must be at least {MIN_SECRET_BYTES} "
            "(e.g. `openssl rand -hex 32`)"
        )
    return value


def read_secret_file(path: Path) -> bytes:
    """The secret a file holds (surrounding whitespace dropped)."""
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise BadSecret(f"cannot read the secret file {path}: {exc.strerror}") from None


def hkdf(secret: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with an empty salt: one key per `info` label."""
    prk = hmac.new(b"\x00" * hashlib.sha256().digest_size, secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def signing_key(secret: bytes, kid: str) -> bytes:
    """The device-token signing key with id `kid`."""
    return hkdf(secret, _SIGNING_LABEL + kid.encode())


def device_tag_key(secret: bytes) -> bytes:
    """The key that names devices in the token revocation list."""
    return hkdf(secret, _DEVICE_TAG_LABEL)


_process_secret: list[bytes] = []


def use(secret: bytes) -> None:
    """Make `secret` this process's secret (the driver that started the engine: its actors
    read theirs from the environment)."""
    _process_secret[:] = [secret]


def process_secret() -> bytes:
    """This process's secret: the one `use` set, else OCC_SECRET, else the file named by
    OCC_SECRET_FILE. Raises BadSecret when there is none."""
    if _process_secret:
        return _process_secret[0]
    value = os.environ.get(SECRET_ENV, "").encode()
    if value:
        secret = value
    elif path := os.environ.get(SECRET_FILE_ENV):
        secret = read_secret_file(Path(path))
    else:
        raise BadSecret(
            f"no secret in this process: set {SECRET_ENV} (or {SECRET_FILE_ENV}) in the "
            "environment of `ray start` on every node"
        )
    _process_secret[:] = [secret]
    return secret
