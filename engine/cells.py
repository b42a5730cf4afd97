"""H3 cells: int64 inside the engine, hex strings only at the edges."""

from collections.abc import Iterable, Sequence
from functools import lru_cache

import h3
import numpy as np
from h3.api import basic_int as h3i

from engine.geo import BBox


def to_str(cell: int) -> str:
    return f"{cell:x}"  # what h3.int_to_str returns, without a C call per cell


def parse_cell(text: str) -> int:
    """Parse an H3 cell given as hex; raises ValueError for anything that is not a valid cell."""
    try:
        cell = h3.str_to_int(text.strip().lower())
        valid = h3i.is_valid_cell(cell)
    except (ValueError, TypeError, OverflowError):  # not hex, or not 64 bits
        raise ValueError(f"{text[:40]!r} is not an H3 cell id") from None
    if not valid:
        raise ValueError(f"{text[:40]!r} is not a valid H3 cell")
    return cell


def check_res(res: int, base_res: int) -> int:
    """A query resolution must lie between 0 and the engine's base resolution."""
    if not 0 <= res <= base_res:
        raise ValueError(f"resolution must be between 0 and {base_res}, got {res}")
    return res


def cell_of(lat: float, lng: float, res: int) -> int:
    return h3i.latlng_to_cell(lat, lng, res)


def index_batch(lats: Sequence[float], lngs: Sequence[float], res: int) -> np.ndarray:
    """H3 cells (int64) of a batch of valid points.

    One C call per point, ~0.4 µs a point here (BENCHMARKS.md, *Pure engine*). h3-py has no
    vectorised `latlng_to_cell` (its numpy API returns arrays only where one call gives many
    cells), so there is no second code path to keep in parity.
    """
    n = len(lats)
    return np.fromiter(map(h3i.latlng_to_cell, lats, lngs, [res] * n), dtype=np.int64, count=n)


def resolution(cell: int) -> int:
    return h3i.get_resolution(cell)


@lru_cache(maxsize=1 << 18)
def parent(cell: int, res: int) -> int:
    """The ancestor of `cell` at `res` (the cell itself at its own resolution). Cached: hot."""
    return h3i.cell_to_parent(cell, res)


@lru_cache(maxsize=1 << 16)
def centre(cell: int) -> tuple[float, float]:
    """(lat, lng) of the cell's centre."""
    return h3i.cell_to_latlng(cell)


# the H3 index layout: the resolution in bits 52-55, then 15 digits of 3 bits (digit r in bits
# 3 * (15 - r) to 3 * (15 - r) + 2), those finer than the cell's resolution all 7
_RES_BITS = np.int64(0xF << 52)


def parents_of(cells: np.ndarray, res: int) -> np.ndarray:
    """`parent(cell, res)` of every cell of an int64 array (each at `res` or finer), by bit
    arithmetic on the index: the resolution set to `res`, the digits below it to 7."""
    tail = (1 << (3 * (15 - res))) - 1
    return (cells & ~_RES_BITS) | np.int64((res << 52) | tail)


def boundary_lnglat(cell: int) -> list[list[float]]:
    """A closed GeoJSON ring ([lng, lat] positions) of the cell's boundary."""
    ring = [[lng, lat] for lat, lng in h3i.cell_to_boundary(cell)]
    return [*ring, ring[0]]


def rollup(counts: Iterable[tuple[int, int]], res: int) -> dict[int, int]:
    """Sum base-resolution counts into their ancestors at `res`; zero counts are dropped."""
    out: dict[int, int] = {}
    for cell, n in counts:
        if n:
            p = parent(cell, res)
            out[p] = out.get(p, 0) + n
    return out


def in_bbox(cell: int, bbox: BBox | None) -> bool:
    """Whether the cell's centre lies in the box (always, without a box)."""
    if bbox is None:
        return True
    lat, lng = centre(cell)
    return bbox.contains(lat, lng)


def polygon_cells(polygon: dict, res: int) -> set[int]:
    """Cells at `res` whose centres lie inside a GeoJSON Polygon (holes respected)."""
    shape = h3.geo_to_h3shape(polygon)
    return {h3.str_to_int(c) for c in h3.h3shape_to_cells(shape, res)}
