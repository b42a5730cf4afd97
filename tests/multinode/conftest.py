"""Multi-node tier: `occupancy up` on a real three-node Ray cluster on this machine, with a
Redis server of its own that every node reaches (as an external Redis on a real cluster)."""

import contextlib
import time
from dataclasses import dataclass

import psutil
import pytest

from actors.redis_server import EmbeddedRedis
from occupancy.http_ingress import serve_env
from occupancy.local_files import HAPROXY_SUBDIR
from tests.engine_process import EngineProcess
from tests.multinode.cluster import LocalRayCluster, cluster_env
from tests.oracle import Oracle

# shard and handler counts: each node gets some of every kind the test kills (SPREAD places
# actors round-robin, handlers go node by node), few enough to keep the tier small
SHARDS = {"UserShard": 3, "CellShard": 2, "SpaceShard": 1, "IngestServer": 3, "History": 1}


@dataclass
class MultiNode:
    """The cluster, its Redis, the engine on it, and an oracle of every ping sent to it."""

    cluster: LocalRayCluster
    redis: EmbeddedRedis
    engine: EngineProcess
    oracle: Oracle
    started_s: dict

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
        for pid in (self.engine.proc.pid, self.redis.proc.pid):
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
        redis_url = redis.start()
        cleanup.callback(redis.stop)
        # what `ray start` needs on every node for the HTTP ingress (HAProxy's run folder is
        # named after the engine's data dir)
        env = cluster_env() | serve_env("haproxy", tmp / "data" / HAPROXY_SUBDIR)
        cluster = LocalRayCluster(env)
        cleanup.callback(cluster.stop)
        cluster.start()
        cluster_s = time.monotonic() - started
        joined = {k: v for k, v in cluster.env.items() if k.startswith("RAY_")}
        engine = EngineProcess(
            tmp,
            OCC_REDIS_URL=redis_url,
            OCC_USER_SHARDS=str(SHARDS["UserShard"]),
            OCC_CELL_SHARDS=str(SHARDS["CellShard"]),
            OCC_SPACE_SHARDS=str(SHARDS["SpaceShard"]),
            OCC_INGEST_HANDLERS=str(SHARDS["IngestServer"]),
            **joined,
        )
        cleanup.callback(_stop, engine)
        timings = {"cluster": cluster_s, "engine": time.monotonic() - started - cluster_s}
        yield MultiNode(cluster, redis, engine, Oracle(), timings)


def _stop(engine: EngineProcess) -> None:
    try:
        engine.stop()
    finally:
        if engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait(timeout=30)
