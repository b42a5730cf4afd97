"""Who may ask what: the role of a request's API key, and the privacy floor of viewers' answers
(engine/privacy.py): viewers get counts released under k_min, admins exact ones."""

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from engine.cells import to_str
from engine.privacy import filter_released, subset_counts
from serve_apps.errors import STORE_GRACE_S, ApiError, within

READ_ROLES = ("viewer", "admin")
ADMIN = ("admin",)
# a viewer's attribute filter under the floor is checked against all its sub-filters (2^n)
MAX_FLOORED_ATTRS = 8

# (key id, role) of an API key, None for an unknown or revoked one
Credential = Callable[[str], tuple[str, str] | None]


def role_of(request: Request, allowed: tuple[str, ...], credential: Credential) -> str:
    """The role of the request's bearer key: 401 without a known key, 403 for another role."""
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not key:
        raise ApiError(401, "unauthenticated", "missing API key (Authorization: Bearer <key>)")
    found = credential(key)
    if found is None:
        raise ApiError(401, "unauthenticated", "unknown or revoked API key")
    role = found[1]
    if role not in allowed:
        raise ApiError(403, "forbidden", f"this needs the {' or '.join(allowed)} role")
    return role


def per_device(role: str) -> None:
    """Answers about one device are for admins."""
    if role != "admin":
        raise ApiError(403, "forbidden", "per-device answers need the admin role")


@dataclass(frozen=True)
class Floor:
    """The privacy floor of a deployment: counts under `k_min` are not shown to viewers."""

    k_min: int = 0

    def count(self, count: int, role: str) -> int:
        return count if role == "admin" or count >= self.k_min else 0

    def k(self, role: str) -> int:
        """The floor a cell answer is released under (engine/privacy.py): k_min for viewers;
        0 for admins, or when k_min is 0 or 1 (nothing to hide), and then nothing extra is
        computed."""
        return self.k_min if role != "admin" and self.k_min > 1 else 0

    def cells(self, counts, role: str) -> list[dict]:
        """`[{"cell", "count"}]` of (cell, count) pairs, those the floor hides left out."""
        return [{"cell": to_str(c), "count": n} for c, n in counts if self.count(n, role) > 0]

    def check_attrs(self, attrs: dict, role: str) -> None:
        """A viewer's attribute filter is bounded: each of its sub-filters is counted."""
        if self.k(role) and len(attrs) > MAX_FLOORED_ATTRS:
            raise ApiError(
                400, "bad_attribute", f"viewers filter on up to {MAX_FLOORED_ATTRS} attributes"
            )

    async def filter_released(
        self, history, t0: int, t1: int, attrs: dict, n: int, timeout_s: float
    ) -> bool:
        """Whether a viewer's answer over `n` devices may be given: n >= k_min and, with
        attribute filters, every filter with fewer of them may be given and differs from it by
        0 or at least k_min devices (engine.privacy.filter_released)."""
        if n < self.k_min:
            return False
        if not attrs or self.k_min <= 1:
            return True
        call = history.attribute_masks(t0, t1, attrs, timeout_s)
        masks = await within(call, timeout_s, STORE_GRACE_S)
        full = (1 << len(attrs)) - 1
        return filter_released(subset_counts(masks, len(attrs)), full, self.k_min)
