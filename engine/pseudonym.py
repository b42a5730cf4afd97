"""Device pseudonyms: raw ids never enter engine state."""

import hashlib
import hmac


def pseudonym(secret: bytes, device_id: str) -> int:
    """First 8 bytes of HMAC-SHA256(secret, id) as an unsigned 64-bit int; stable per deployment."""
    digest = hmac.new(secret, device_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big")


def pseudonym_str(key: int) -> str:
    """The 16-hex-digit form that viewers and exports see."""
    return f"{key:016x}"


def parse_pseudonym(text: str) -> int:
    if len(text) != 16:
        raise ValueError("a pseudonym is 16 hex digits")
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError("a pseudonym is 16 hex digits") from None
