"""Polygon spaces: named GeoJSON polygons covered by base-resolution cells."""

import h3

from engine.cells import polygon_cells
from engine.geo import polygon_area_m2, validate_polygon

MAX_SPACE_CELLS = 250_000


class SpaceIndex:
    """Polygon spaces and the reverse index cell -> spaces.

    `define` replaces a space's polygon (idempotent for the same polygon); `spaces_of(cell)` is
    on the ingest hot path and returns a shared tuple.
    """

    def __init__(self, res: int):
        self.res = res
        self._polygons: dict[str, dict] = {}
        self._names: dict[str, str] = {}
        self._cells: dict[str, frozenset[int]] = {}
        self._by_cell: dict[int, tuple[str, ...]] = {}

    def define(self, space: str, polygon: dict, name: str = "") -> frozenset[int]:
        """Define or redefine a polygon space; returns its cells. Raises ValueError when the
        polygon is invalid, covers no cell centre, or is too large."""
        polygon = validate_polygon(polygon)
        # the cover's cost grows with the cells it makes: refuse what is far too large first
        estimate = polygon_area_m2(polygon) / h3.average_hexagon_area(self.res, "m^2")
        if estimate > 1.5 * MAX_SPACE_CELLS:
            raise ValueError(
                f"the polygon covers about {estimate:,.0f} cells; at most {MAX_SPACE_CELLS:,}"
            )
        cells = frozenset(polygon_cells(polygon, self.res))
        if not cells:
            raise ValueError("the polygon contains no cell centre at the base resolution")
        if len(cells) > MAX_SPACE_CELLS:
            raise ValueError(f"the polygon covers {len(cells)} cells; at most {MAX_SPACE_CELLS}")
        self.remove(space)
        self._polygons[space], self._names[space], self._cells[space] = polygon, name, cells
        for cell in cells:
            self._by_cell[cell] = (*self._by_cell.get(cell, ()), space)
        return cells

    def remove(self, space: str) -> None:
        for cell in self._cells.pop(space, ()):
            rest = tuple(s for s in self._by_cell[cell] if s != space)
            if rest:
                self._by_cell[cell] = rest
            else:
                del self._by_cell[cell]
        self._polygons.pop(space, None)
        self._names.pop(space, None)

    def spaces_of(self, cell: int) -> tuple[str, ...]:
        return self._by_cell.get(cell, ())

    def cells(self, space: str) -> frozenset[int]:
        return self._cells.get(space, frozenset())

    def __contains__(self, space: str) -> bool:
        return space in self._cells

    def spaces(self) -> list[str]:
        return sorted(self._cells)

    def describe(self, space: str) -> dict:
        return {"name": self._names[space], "polygon": self._polygons[space]}

    def snapshot(self) -> dict:
        """Polygons only: cells are derived again on restore."""
        return {
            "res": self.res,
            "spaces": [[s, self._names[s], self._polygons[s]] for s in sorted(self._polygons)],
        }

    @classmethod
    def restore(cls, state: dict) -> "SpaceIndex":
        index = cls(state["res"])
        for space, name, polygon in state["spaces"]:
            index.define(space, polygon, name)
        return index
