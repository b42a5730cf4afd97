"""What every benchmark script needs: percentiles of its samples and a free loopback port.

The scripts run as `python bench/<name>.py`, so this module is imported as `measure`."""

import socket


def percentile(values: list[float], q: float) -> float:
    """The sample at quantile `q` (nearest rank); NaN for no samples."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
