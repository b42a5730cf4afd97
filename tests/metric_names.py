"""What a metric's name must say of its unit, checked over the code's names and over /metrics."""

# A counter ends in `_total`; anything else in a base unit or the plural of what it counts, in
# `_info` (a gauge that is 1 for each labelled thing), or `_version` (a number with no unit).
UNITS = (
    "seconds",
    "bytes",
    "ratio",
    "pings",
    "devices",
    "cells",
    "entries",
    "records",
    "watermarks",
    "info",
    "version",
)


def lacks_unit(name: str, kind: str) -> bool:
    """True when `name` (a family's name as exposed) does not say its unit."""
    if kind == "counter":
        return not name.endswith("_total")
    if name.endswith("_total"):
        return True  # only counters are totals
    return name.rsplit("_", 1)[-1] not in UNITS
