"""The processes of an engine run by `occupancy up` (tests/engine_process.py), for faults."""

from pathlib import Path

import psutil
import redis

from occupancy.local_files import running_redis_url
from occupancy.settings import Settings
from state.redis_server import SUBDIR
from tests.engine_process import EngineProcess


def redis_port(engine: EngineProcess) -> int:
    return int((Path(engine.env["OCC_DATA_DIR"]) / SUBDIR / "redis.port").read_text())


def embedded_redis(data_dir: Path) -> redis.Redis:
    """A client of a data dir's embedded Redis (its port and password are in its folder)."""
    return redis.Redis.from_url(running_redis_url(Settings(data_dir=Path(data_dir))))


def redis_of(engine: EngineProcess) -> redis.Redis:
    return embedded_redis(Path(engine.env["OCC_DATA_DIR"]))


def redis_server(engine: EngineProcess) -> psutil.Process:
    """The engine's embedded redis-server (its process title names its address)."""
    address = f"127.0.0.1:{redis_port(engine)}"
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or [])
        if "redis-server" in cmdline and address in cmdline:
            return p
    raise AssertionError("no redis-server of this engine")


def actors(engine: EngineProcess, kind: str) -> list[psutil.Process]:
    """The engine's actor processes of one kind (`UserShard`): descendants of its `occupancy
    up`, which started its own Ray. A shard's forked checkpoint child carries its parent's
    title and is left out."""
    found = [
        p
        for p in psutil.Process(engine.proc.pid).children(recursive=True)
        if " ".join(p.cmdline()[:1]).startswith(f"ray::{kind}")
    ]
    pids = {p.pid for p in found}
    return [p for p in found if p.ppid() not in pids]
