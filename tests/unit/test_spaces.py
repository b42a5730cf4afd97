"""Polygon spaces: their size is judged from their area before they are covered with cells."""

import h3
import pytest

from engine.geo import MAX_POLYGON_VERTICES, polygon_area_m2, validate_polygon
from engine.spaces import SpaceIndex


def _square(lng: float, lat: float, size: float) -> dict:
    ring = [[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def test_a_country_sized_space_is_refused_from_its_area_before_any_cell_is_made():
    # "about": the estimate refused it (covering it takes seconds and 1.3M cells first)
    with pytest.raises(ValueError, match=r"about 1,1\d\d,\d{3} cells; at most 250,000"):
        SpaceIndex(9).define("big", _square(-8.0, 52.0, 4.0))


def test_the_area_estimate_follows_the_cover():
    for size in (0.01, 0.05, 0.2):
        polygon = _square(-8.64, 52.655, size)
        cells = SpaceIndex(9).define("s", polygon)
        estimate = polygon_area_m2(polygon) / h3.average_hexagon_area(9, "m^2")
        assert estimate == pytest.approx(len(cells), rel=0.25)


def test_vertices_are_bounded():
    ring = [[-8.6 + i * 1e-6, 52.6] for i in range(MAX_POLYGON_VERTICES)] + [[-8.6, 52.7]]
    ring.append(ring[0])
    with pytest.raises(ValueError, match="at most 10000 positions"):
        validate_polygon({"type": "Polygon", "coordinates": [ring]})
    with pytest.raises(ValueError, match="ring must be a list"):
        validate_polygon({"type": "Polygon", "coordinates": [5]})
