"""What every benchmark script needs: percentiles, a free loopback port, open-loop calls.

The scripts run as `python bench/<name>.py`, so this module is imported as `measure`."""

import socket
import threading
import time


def percentile(values: list[float], q: float) -> float:
    """The sample at quantile `q` (nearest rank); NaN for no samples."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_loop(fn, rate: float, seconds: float) -> list[tuple[float, object]]:
    """Call `fn` at `rate`/s for `seconds`, call k at k / rate whatever the earlier ones do
    (each on its own thread, so a slow answer does not delay the next request); the seconds
    each call took and what it returned."""
    results: list[tuple[float, object]] = []
    lock = threading.Lock()

    def one():
        t = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t
        with lock:
            results.append((elapsed, value))

    threads = []
    start = time.perf_counter()
    for k in range(int(rate * seconds)):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        th = threading.Thread(target=one)
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    return results
