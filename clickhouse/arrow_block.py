"""Insert blocks as Arrow columns for chDB: ClickHouse reads them without parsing text.

Only blocks whose every value converts exactly take this path (`arrow_block` returns None for
any other): a value Arrow would coerce where ClickHouse would refuse or read it otherwise (a bool
or a float in an integer column, a NaN, a number out of range, a map of non-strings) leaves the
whole block to the JSON path, so what ClickHouse accepts and refuses does not change.
"""

import re
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

_INTS = {
    "Int8": pa.int8(),
    "Int16": pa.int16(),
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
}
_FLOATS = {"Float32": pa.float32(), "Float64": pa.float64()}
_STRING_MAP = pa.map_(pa.string(), pa.string())
_LOW_CARDINALITY = re.compile(r"^LowCardinality\((.*)\)$")


def arrow_type(clickhouse: str) -> pa.DataType | None:
    """The Arrow type a ClickHouse column type is written from; None: not written as Arrow."""
    match = _LOW_CARDINALITY.match(clickhouse)
    if match:
        clickhouse = match.group(1)
    if clickhouse in _INTS:
        return _INTS[clickhouse]
    if clickhouse in _FLOATS:
        return _FLOATS[clickhouse]
    if clickhouse == "String":
        return pa.string()
    if clickhouse == "Map(String, String)":
        return _STRING_MAP
    return None


# the Python types a column of each Arrow kind takes as they are
_EXACT = {
    "int": {int},
    "float": {float, int},
    "string": {str},
    "map": {dict},  # keys and values other than str fail to convert
}


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_map(t):
        return "map"
    return "string"


def arrow_block(
    columns: Sequence[str], data: Sequence[Sequence], types: Sequence[pa.DataType | None]
) -> pa.Table | None:
    """The block as an Arrow table with the columns' types, or None if any value would not
    convert exactly (see the module's docstring)."""
    arrays = []
    for values, t in zip(data, types, strict=True):
        if t is None:
            return None
        kind = _kind(t)
        if not set(map(type, values)) <= _EXACT[kind]:
            return None
        try:
            array = pa.array(values, type=t)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return None
        if kind == "float" and pc.any(pc.is_nan(array)).as_py():
            return None  # the JSON path writes NaN as null
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=list(columns))
