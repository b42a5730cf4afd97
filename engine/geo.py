"""Great-circle distance, bounding boxes and point-in-polygon on (lng, lat) coordinates."""

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres on a sphere of the mean Earth radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def haversine_many(
    lat1: Sequence[float], lng1: Sequence[float], lat2: Sequence[float], lng2: Sequence[float]
) -> list[float]:
    """`haversine_m` of each position's four values, for a whole batch at once (the same
    formula in numpy: equal to it but for the last bits)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.subtract(lng2, lng1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return (2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))).tolist()


@dataclass(frozen=True, slots=True)
class BBox:
    """An axis-aligned box in degrees; borders are inside."""

    min_lng: float
    min_lat: float
    max_lng: float
    max_lat: float

    def __post_init__(self) -> None:
        values = (self.min_lng, self.min_lat, self.max_lng, self.max_lat)
        if not all(math.isfinite(v) for v in values):
            raise ValueError("bbox values must be finite numbers")
        if not (-180 <= self.min_lng <= self.max_lng <= 180):
            raise ValueError("bbox needs -180 <= minLng <= maxLng <= 180")
        if not (-90 <= self.min_lat <= self.max_lat <= 90):
            raise ValueError("bbox needs -90 <= minLat <= maxLat <= 90")

    @classmethod
    def parse(cls, text: str) -> "BBox":
        """Parse `minLng,minLat,maxLng,maxLat`; raises ValueError with a readable message."""
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError("bbox must be minLng,minLat,maxLng,maxLat")
        try:
            return cls(*(float(p) for p in parts))
        except ValueError as exc:
            raise ValueError(f"bad bbox {text!r}: {exc}") from None

    @staticmethod
    def to_tuple(box: "BBox | None") -> tuple[float, float, float, float] | None:
        """The box as plain numbers (minLng, minLat, maxLng, maxLat) for a call to an actor;
        None stays None. `BBox.from_tuple` reads it back."""
        return None if box is None else (box.min_lng, box.min_lat, box.max_lng, box.max_lat)

    @classmethod
    def from_tuple(cls, values: tuple | list | None) -> "BBox | None":
        return None if values is None else cls(*values)

    def contains(self, lat: float, lng: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lng <= lng <= self.max_lng


def _in_ring(lng: float, lat: float, ring: list) -> bool:
    inside = False
    j = len(ring) - 1
    for i in range(len(ring)):
        xi, yi = ring[i][0], ring[i][1]
        xj, yj = ring[j][0], ring[j][1]
        if (yi > lat) != (yj > lat) and lng < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def polygon_contains(polygon: dict, lat: float, lng: float) -> bool:
    """Whether a GeoJSON Polygon (holes respected) contains the point (planar in degrees)."""
    rings = polygon["coordinates"]
    if not _in_ring(lng, lat, rings[0]):
        return False
    return not any(_in_ring(lng, lat, hole) for hole in rings[1:])


MAX_POLYGON_VERTICES = 10_000  # over all rings


def validate_polygon(polygon: object) -> dict:
    """Check a GeoJSON Polygon geometry and return it; raises ValueError saying what is wrong."""
    if not isinstance(polygon, dict) or polygon.get("type") != "Polygon":
        raise ValueError('polygon must be a GeoJSON geometry with "type": "Polygon"')
    rings = polygon.get("coordinates")
    if not isinstance(rings, list) or not rings:
        raise ValueError("polygon coordinates must be a non-empty list of rings")
    if not all(isinstance(ring, list) for ring in rings):
        raise ValueError("each polygon ring must be a list of positions")
    if sum(len(ring) for ring in rings) > MAX_POLYGON_VERTICES:
        raise ValueError(f"a polygon has at most {MAX_POLYGON_VERTICES} positions")
    for ring in rings:
        if not isinstance(ring, list) or len(ring) < 4:
            raise ValueError("each polygon ring needs at least 4 positions")
        for pos in ring:
            ok = isinstance(pos, list | tuple) and len(pos) >= 2
            if not ok or not all(isinstance(v, int | float) and math.isfinite(v) for v in pos[:2]):
                raise ValueError("each position must be [lng, lat] with finite numbers")
            if not (-180 <= pos[0] <= 180 and -90 <= pos[1] <= 90):
                raise ValueError(f"position {list(pos[:2])} is out of range")
        if list(ring[0][:2]) != list(ring[-1][:2]):
            raise ValueError("each polygon ring must be closed (first position == last)")
    return {"type": "Polygon", "coordinates": [[list(p[:2]) for p in r] for r in rings]}


def polygon_bbox(polygon: dict) -> BBox:
    """The bounding box of a validated polygon's outer ring."""
    outer = polygon["coordinates"][0]
    lngs, lats = [p[0] for p in outer], [p[1] for p in outer]
    return BBox(min(lngs), min(lats), max(lngs), max(lats))


def polygon_area_m2(polygon: dict) -> float:
    """The area of a validated polygon on the sphere (outer ring less its holes), in m²: the
    ring-integral form of Chamberlain and Duquette (JPL, 2007), a few per cent off for the
    polygons people draw."""

    def ring_area(ring: list) -> float:
        total = 0.0
        for (lng1, lat1), (lng2, lat2) in itertools.pairwise(ring):
            dlng = math.radians(lng2 - lng1)
            total += dlng * (2 + math.sin(math.radians(lat1)) + math.sin(math.radians(lat2)))
        return abs(total) * EARTH_RADIUS_M**2 / 2

    outer, *holes = polygon["coordinates"]
    return max(0.0, ring_area(outer) - sum(ring_area(h) for h in holes))
