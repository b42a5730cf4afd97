"""The README's demo command runs and prints live counts that change."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_changing_live_counts():
    proc = subprocess.run(
        [sys.executable, "-m", "occupancy.cli", "demo", "--devices", "400", "--duration", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120", "TERM": "dumb"},
    )
    assert proc.returncode == 0, proc.stderr
    headers = re.findall(r"live occupancy · (\d+) devices · (\d+) pings", proc.stdout)
    assert len(headers) >= 3, proc.stdout
    pings = [int(p) for _, p in headers]
    assert pings == sorted(pings) and pings[-1] > pings[0]
    devices = [int(d) for d, _ in headers]
    assert devices == sorted(devices) and 0 < devices[-1] <= 400
    # per-tick tables differ as devices move
    tables = proc.stdout.split("live occupancy")[1:]
    assert len(set(tables)) == len(tables)
