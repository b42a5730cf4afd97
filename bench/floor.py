"""What the privacy floor costs a cell shard: the exact heatmap and top-N of bench/query.py's
area beside the released ones (engine/privacy.py), per resolution, in one process.

`--devices` devices spread over the area as in bench/query.py (20,000: ~5,400 base cells),
placed on `--shards` cell shards by their parent at the placement resolution (6), as the
engine places them; each figure is the median of `--repeat` runs of every shard's part, plus
the merge (and, below the placement resolution, the lift of the shards' pairs).

    .venv/bin/python bench/floor.py [--devices 20000] [--shards 2] [--k-min 3]
"""

import argparse
import os
import statistics
import time

from engine.cells import cell_of, parent
from engine.geo import BBox
from engine.privacy import floored_part, floored_top, merge_floored, within
from engine.ring import mix64
from engine.topn import area_counts, merge_counts, merge_top, ranked, shard_top

AREA = (-8.80, 52.53, -8.50, 52.77)  # bench/query.py's
PLACEMENT = 6
BASE = 9


def position(i: int) -> tuple[float, float]:
    u, v = (i * 0.6180339887) % 1, (i * 0.7548776662) % 1
    return AREA[1] + v * (AREA[3] - AREA[1]), AREA[0] + u * (AREA[2] - AREA[0])


def shards_of(devices: int, shards: int) -> list[dict[int, int]]:
    parts: list[dict[int, int]] = [{} for _ in range(shards)]
    for i in range(devices):
        cell = cell_of(*position(i), BASE)
        part = parts[mix64(parent(cell, PLACEMENT)) % shards]
        part[cell] = part.get(cell, 0) + 1
    return parts


def median_ms(run, repeat: int) -> float:
    run()  # warm the parent cache, as a running shard's is
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--k-min", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    parts, k, box = shards_of(args.devices, args.shards), args.k_min, BBox(*AREA)
    cells = sum(len(p) for p in parts)
    print(
        f"# {args.devices:,} devices on {cells:,} base cells, {args.shards} shards, k_min {k}; "
        f"median of {args.repeat} runs, ms; {os.cpu_count()} cores"
    )
    print("| res | heatmap exact | heatmap floored | top-10 exact | top-10 floored |")
    print("|---:|---:|---:|---:|---:|")
    keep = within(box)
    for res in range(BASE, 3, -1):
        level, whole = max(res, PLACEMENT), res >= PLACEMENT

        def heat_exact(res=res):
            return merge_counts(area_counts(p, res, box) for p in parts)

        def heat_floored(res=res, level=level):
            return merge_floored(
                [floored_part(p, BASE, res, level, k, keep) for p in parts], level, res, k
            )

        def top_exact(res=res, whole=whole):
            return merge_top((shard_top(p, 10, res, None, whole) for p in parts), 10)

        def top_floored(res=res, level=level, whole=whole):
            if whole:
                return merge_top((floored_top(p, 10, BASE, res, k) for p in parts), 10)
            pieces = [floored_part(p, BASE, res, level, k) for p in parts]
            return ranked(merge_floored(pieces, level, res, k), 10)

        figures = [median_ms(f, args.repeat) for f in (heat_exact, heat_floored)]
        figures += [median_ms(f, args.repeat) for f in (top_exact, top_floored)]
        print(f"| {res} | " + " | ".join(f"{x:.2f}" for x in figures) + " |")


if __name__ == "__main__":
    main()
