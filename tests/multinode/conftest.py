"""Multi-node tier: `occupancy up` on a real three-node Ray cluster on this machine, with a
Redis server of its own that every node reaches (as an external Redis on a real cluster) and
another for the GCS's tables (GCS fault tolerance, as the cluster configs have it)."""

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from occupancy.http_ingress import serve_env
from occupancy.local_files import HAPROXY_SUBDIR
from state.redis_server import EmbeddedRedis
from tests.engine_process import EngineProcess
from tests.multinode.cluster import LocalRayCluster, cluster_env
from tests.oracle import Oracle

# shard and handler counts: six shards and three handlers, placed round-robin over three nodes,
# give each node a user shard, a cell or space shard and a handler; few, to keep the tier small
SHARDS = {"UserShard": 3, "CellShard": 2, "SpaceShard": 1, "IngestServer": 3, "History": 1}


@dataclass
class MultiNode:
    """The cluster, its Redis, the engine on it, and an oracle of every ping sent to it."""

    tmp: Path
    cluster: LocalRayCluster
    redis: EmbeddedRedis
    gcs_redis: EmbeddedRedis | None = None
    oracle: Oracle = field(default_factory=Oracle)
    engine: EngineProcess | None = None
    started_s: dict = field(default_factory=dict)

    def start_engine(self, **extra: str) -> EngineProcess:
        """`occupancy up` joined to the cluster, on the data dir and Redis of any before it."""
        joined = {k: v for k, v in self.cluster.env.items() if k.startswith("RAY_")}
        self.engine = EngineProcess(
            self.tmp,
            OCC_REDIS_URL=self.redis.url,
            OCC_USER_SHARDS=str(SHARDS["UserShard"]),
            OCC_CELL_SHARDS=str(SHARDS["CellShard"]),
            OCC_SPACE_SHARDS=str(SHARDS["SpaceShard"]),
            OCC_INGEST_HANDLERS=str(SHARDS["IngestServer"]),
            **joined,
            **extra,
        )
        return self.engine

    def placement(self) -> dict[str, dict[str, int]]:
        """node → actor class → how many of the engine's actors run there now."""
        out = {}
        for node in self.cluster.nodes:
            if node.killed:
                continue
            out[node.name] = {kind: len(node.actors(kind)) for kind in SHARDS}
        return out

    def memory_bytes(self) -> int:
        """What the whole deployment takes: every Ray process of the nodes, the engine's
        driver (`occupancy up`) and Redis (proportional set sizes)."""
        total = self.cluster.memory_bytes()
        redis = [r.proc.pid for r in (self.redis, self.gcs_redis) if r is not None]
        for pid in (self.engine.proc.pid, *redis):
            try:
                total += psutil.Process(pid).memory_full_info().pss
            except psutil.NoSuchProcess:
                pass
        return total


@pytest.fixture(scope="module")
def multinode(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:  # each part is stopped even if another's stop fails
        redis = EmbeddedRedis(tmp / "redis", supervise=False)  # a redis-server of its own
        redis.start()
        cleanup.callback(redis.stop)
        # the GCS's own Redis, as the cluster configs have it (GCS fault tolerance)
        gcs_redis = EmbeddedRedis(tmp / "gcs-redis", supervise=False)
        gcs_url = urlsplit(gcs_redis.start())
        gcs_address = f"{gcs_url.hostname}:{gcs_url.port}"
        cleanup.callback(gcs_redis.stop)
        # what `ray start` needs on every node for the HTTP ingress (HAProxy's run folder is
        # named after the engine's data dir)
        env = cluster_env() | serve_env("haproxy", tmp / "data" / HAPROXY_SUBDIR)
        cluster = LocalRayCluster(env, gcs_redis=gcs_address, gcs_redis_password=gcs_url.password)
        cleanup.callback(cluster.stop)
        cluster.start()
        m = MultiNode(tmp, cluster, redis, gcs_redis)
        m.started_s["cluster"] = time.monotonic() - started
        cleanup.callback(lambda: _stop(m.engine))  # the engine running at the end
        m.start_engine()
        m.started_s["engine"] = time.monotonic() - started - m.started_s["cluster"]
        yield m


def _stop(engine: EngineProcess | None) -> None:
    if engine is None:
        return
    try:
        engine.stop()
    finally:
        if engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait(timeout=30)
