"""Files and folders only their owner may read: the data dir, the secret, keys, passwords.

Each is created with its final mode (never readable by others for a moment), and one found
with a wider mode (made by hand, copied, or by an earlier version) is narrowed."""

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """`path` (and missing parents) as a folder only its owner can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was %o; narrowed to 700 (it holds the engine's logs and keys)", path, mode)
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (0600), created so."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def generated_once(path: Path, nbytes: int) -> Path:
    """`path`, holding a random hex string of `nbytes` bytes made on first use (0600 in a 0700
    folder); one made by hand or copied is narrowed to 0600, only its owner reads it."""
    if not path.exists():
        private_dir(path.parent)
        write_private(path, secrets.token_hex(nbytes) + "\n")
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path
