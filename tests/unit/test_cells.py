"""H3 known answers, batch indexing, roll-up and bounding boxes."""

import math

import h3
import pytest

from engine.cells import (
    cell_of,
    check_res,
    index_batch,
    parent,
    parents_of,
    parse_cell,
    polygon_cells,
    rollup,
    to_str,
)
from engine.geo import BBox, haversine_m, polygon_contains, validate_polygon
from tests.workload import SQUARE_WITH_HOLE


def test_known_answers_pin_h3_ids():
    # the example of h3-py's documentation
    assert to_str(cell_of(37.769377, -122.388903, 9)) == "89283082e73ffff"
    assert cell_of(37.769377, -122.388903, 9) == 617700170065510399
    assert to_str(parent(617700170065510399, 5)) == "85283083fffffff"
    # first point of the Limerick bus trace in occupancy/data/
    assert to_str(cell_of(52.6291510, -8.6617460, 9)) == "89182e6c20fffff"
    assert to_str(cell_of(52.6291510, -8.6617460, 6)) == "86182e6c7ffffff"
    assert to_str(cell_of(52.6291510, -8.6617460, 0)) == "8019fffffffffff"


def test_index_batch_matches_scalar_path():
    lats = [52.62915 + i * 1e-3 for i in range(500)]
    lngs = [-8.66174 - i * 7e-4 for i in range(500)]
    batch = index_batch(lats, lngs, 9)
    assert batch.dtype.name == "int64"
    assert batch.tolist() == [cell_of(a, b, 9) for a, b in zip(lats, lngs, strict=True)]
    strings = [h3.latlng_to_cell(a, b, 9) for a, b in zip(lats, lngs, strict=True)]
    assert batch.tolist() == [h3.str_to_int(s) for s in strings]


def test_parents_of_matches_h3_at_every_resolution():
    lats = [52.62915 + i * 1e-2 for i in range(200)] + [-33.9, 64.1, 0.0, -89.9, 89.9]
    lngs = [-8.66174 - i * 7e-3 for i in range(200)] + [151.2, -21.9, 0.0, 179.9, -179.9]
    for base in (15, 9, 4):
        cells = index_batch(lats, lngs, base)
        for res in range(base + 1):
            want = [h3.str_to_int(h3.cell_to_parent(to_str(int(c)), res)) for c in cells]
            assert parents_of(cells, res).tolist() == want, (base, res)
    assert to_str(int(parents_of(index_batch([52.6291510], [-8.6617460], 9), 6)[0])) == (
        "86182e6c7ffffff"
    )


def test_parse_cell_accepts_hex_and_rejects_junk():
    assert parse_cell("89283082E73FFFF") == 617700170065510399
    for bad in ["", "zz", "89283082e73fff", "0", "ffffffffffffffff", "9" * 40, "-" + "9" * 25]:
        with pytest.raises(ValueError):
            parse_cell(bad)


def test_check_res_bounds():
    assert check_res(0, 9) == 0
    with pytest.raises(ValueError):
        check_res(10, 9)
    with pytest.raises(ValueError):
        check_res(-1, 9)


def test_rollup_sums_children_and_drops_zeros():
    a = cell_of(52.6291, -8.6617, 9)
    b = cell_of(52.6300, -8.6600, 9)
    far = cell_of(48.85, 2.35, 9)
    assert parent(a, 5) == parent(b, 5) != parent(far, 5)
    out = rollup([(a, 2), (b, 3), (far, 1), (cell_of(0, 0, 9), 0)], 5)
    assert out == {parent(a, 5): 5, parent(far, 5): 1}
    assert rollup([(a, 2)], 9) == {a: 2}


def test_bbox_parse_and_errors():
    box = BBox.parse("-8.7,52.6,-8.6,52.7")
    assert box.contains(52.65, -8.65) and not box.contains(52.75, -8.65)
    assert box.contains(52.6, -8.7)  # borders are inside
    for bad in ["1,2,3", "a,b,c,d", "10,0,5,1", "0,95,1,96", "nan,0,1,1"]:
        with pytest.raises(ValueError):
            BBox.parse(bad)


def test_haversine_known_distance():
    # 0.01 degree of latitude on the mean-radius sphere
    assert haversine_m(52.0, -8.0, 52.01, -8.0) == pytest.approx(1111.95, abs=0.01)
    assert haversine_m(1.0, 1.0, 1.0, 1.0) == 0.0


def test_polygon_cells_are_the_cells_whose_centres_are_inside():
    poly = validate_polygon(SQUARE_WITH_HOLE)
    cells = polygon_cells(poly, 9)
    assert cells
    candidates = set(h3.grid_disk(h3.latlng_to_cell(52.66, -8.63, 9), 12))
    for c in candidates:
        lat, lng = h3.cell_to_latlng(c)
        assert (h3.str_to_int(c) in cells) == polygon_contains(poly, lat, lng)
    centre_of_hole = cell_of(52.66, -8.63, 9)
    assert centre_of_hole not in cells


def test_validate_polygon_errors():
    good = [[0, 0], [1, 0], [1, 1], [0, 0]]
    assert validate_polygon({"type": "Polygon", "coordinates": [good]})
    bad = [
        None,
        {"type": "Point", "coordinates": [0, 0]},
        {"type": "Polygon", "coordinates": []},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, math.nan], [1, 1], [0, 0]]]},
        {"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]},
    ]
    for polygon in bad:
        with pytest.raises(ValueError):
            validate_polygon(polygon)


def test_parse_time_and_day():
    from engine.timeutil import parse_day, parse_time

    assert parse_time("1710115200000") == 1_710_115_200_000
    assert parse_time("2024-03-11T00:00:00Z") == 1_710_115_200_000
    assert parse_time("2024-03-11T01:00:00+01:00") == 1_710_115_200_000
    assert parse_time("2024-03-11T00:00:00") == 1_710_115_200_000
    # ms as JSON may write an integer (the document's `integer` takes 2.0), never a fraction
    assert parse_time("1710115200000.0") == parse_time("1710115200000") == 1_710_115_200_000
    with pytest.raises(ValueError):
        parse_time("1710115200000.5")
    assert parse_day("2024-03-11") == 1_710_115_200_000
    for bad in ["", "yesterday", "2024-13-01T00:00", str(2**63), "-" + "9" * 25, "9" * 40]:
        with pytest.raises(ValueError):
            parse_time(bad)
    assert parse_time("9999-12-31T23:59:59.999Z") == 253_402_300_799_999
    for bad in [" 1710115200000", "١٢٣", "1_000", "+5"]:  # ASCII digits only, as documented
        with pytest.raises(ValueError, match="neither ms since the epoch nor"):
            parse_time(bad)
    for bad in ["2024-02-30", "11/03/2024", "2024-03-11T00:00"]:
        with pytest.raises(ValueError):
            parse_day(bad)


def test_every_time_rfc_3339_can_write_is_accepted_to_the_millisecond():
    """The years 1 to 9999 at any offset (what the OpenAPI document promises, and what a fuzzer
    sends at the edges), in whole ms: a float's ms were one off, and its rounding took the last
    microsecond of 9999 into the year 10000."""
    from engine.timeutil import EARLIEST_MS, LATEST_MS, parse_time

    assert parse_time("0001-01-01T00:00:00+23:59") == EARLIEST_MS
    assert parse_time("9999-12-31T23:59:59.999999-23:59") == LATEST_MS
    assert parse_time(str(EARLIEST_MS)) == EARLIEST_MS and parse_time(str(LATEST_MS)) == LATEST_MS
    assert parse_time("9999-12-31T23:59:59.999999Z") == 253_402_300_799_999
    assert parse_time("0001-01-01") == -62_135_596_800_000
    assert parse_time("6335-06-25T08:45:13.994Z") == 137_761_202_713_994
    assert parse_time("1969-12-31T23:59:59.9995Z") == -1  # the ms that holds it
    for outside in [str(EARLIEST_MS - 1), str(LATEST_MS + 1), "999999999999999"]:
        with pytest.raises(ValueError, match="outside the years 1 to 9999"):
            parse_time(outside)
