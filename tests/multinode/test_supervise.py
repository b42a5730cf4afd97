"""`occupancy supervise` against a real Ray head with its job API, as the Kubernetes Job runs it
against a RayService's head: the engine's driver runs as a Ray job on the head; a supervisor
that goes and comes back follows that job instead of starting another; `occupancy up` refuses to
join a running engine (which it would stop when it stopped); a driver that dies is started
again."""

import contextlib
import secrets
import signal
import subprocess
import sys
import threading
import time

import grpc
import psutil
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from occupancy.supervisor import RayJobs
from state.redis_server import EmbeddedRedis
from tests.multinode.cluster import ROOT, LocalRayCluster, cluster_env, free_port

pytestmark = [pytest.mark.integration, pytest.mark.multinode]

ENGINE_WAIT_S = 240.0  # a driver's start on a busy 2-core machine, twice if refused once
ENTRYPOINT = f"{sys.executable} -m occupancy.cli up --no-api"  # the checkout's, not an install


class Supervise:
    """`occupancy supervise` in a subprocess; what it says, as it says it."""

    def __init__(self, cluster: LocalRayCluster):
        env = {k: v for k, v in cluster.env.items() if k != "RAY_ADDRESS"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "occupancy.cli", "supervise",
             "--address", cluster.dashboard_url, "--entrypoint", ENTRYPOINT],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True).start()

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def kill(self) -> None:
        self.proc.kill()  # as a pod lost with its node: no goodbye
        self.proc.wait(timeout=30)


def _serving(port: int) -> bool:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return answer.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def _wait_for(check, what: str, timeout_s: float = ENGINE_WAIT_S, said=lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}; the supervisor said:\n{said()}"
        time.sleep(1)


def _history_pid(cluster: LocalRayCluster) -> int | None:
    found = cluster.head.actors("History")
    return found[0].pid if len(found) == 1 else None


def _drivers(cluster: LocalRayCluster) -> list[psutil.Process]:
    """The engine's driver processes the head's job supervisors started (the Python process,
    not the shell that runs the entrypoint)."""
    out = []
    for p in cluster.head.processes():
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.cmdline()[1:4] == ["-m", "occupancy.cli", "up"]:
                out.append(p)
    return out


def test_supervise_keeps_one_engine_running_whatever_comes_and_goes(tmp_path):
    with contextlib.ExitStack() as cleanup:
        redis = EmbeddedRedis(tmp_path / "redis", supervise=False)
        redis.start()
        cleanup.callback(redis.stop)
        grpc_port = free_port()
        settings = {  # the head's environment, which the job's driver inherits (as on a pod)
            "OCC_REDIS_URL": redis.url,
            "OCC_SECRET": secrets.token_hex(32),
            "OCC_DATA_DIR": str(tmp_path / "data"),
            "OCC_GRPC_PORT": str(grpc_port),
            "OCC_USER_SHARDS": "1",
            "OCC_CELL_SHARDS": "1",
            "OCC_SPACE_SHARDS": "1",
            "OCC_INGEST_HANDLERS": "1",
        }
        cluster = LocalRayCluster(cluster_env() | settings, workers=(), dashboard=True)
        cleanup.callback(cluster.stop)
        cluster.start()
        jobs = RayJobs(cluster.dashboard_url, token=cluster.env["RAY_AUTH_TOKEN"])
        cleanup.callback(lambda: _stop_engine_jobs(cluster, jobs))

        first = Supervise(cluster)
        cleanup.callback(first.kill)
        text = lambda: "".join(first.lines)  # noqa: E731
        _wait_for(lambda: _serving(grpc_port), "the engine serves ingest", said=text)
        assert first.said("submitted occupancy-engine-1")
        history = _history_pid(cluster)
        assert history is not None

        # the supervisor goes (its pod lost): the engine runs on, owned by the Ray job
        first.kill()
        time.sleep(3)
        assert _serving(grpc_port) and _history_pid(cluster) == history

        # its replacement follows the job that runs; it starts no other
        second = Supervise(cluster)
        cleanup.callback(second.kill)
        text = lambda: "".join(second.lines)  # noqa: E731
        _wait_for(lambda: second.said("following occupancy-engine-1 (RUNNING)"), "follow", 60, text)
        assert [j.submission_id for j in jobs.list()] == ["occupancy-engine-1"]

        # another driver joining the running engine is refused, and the engine is untouched
        joined = subprocess.run(
            [sys.executable, "-m", "occupancy.cli", "up", "--no-api"],
            cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert joined.returncode == 1, joined.stdout + joined.stderr
        assert "an engine already runs in Ray namespace" in joined.stderr
        assert _serving(grpc_port) and _history_pid(cluster) == history

        # the driver dies: its actors go with it, and the supervisor starts the engine again
        [driver] = _drivers(cluster)
        driver.send_signal(signal.SIGKILL)
        _wait_for(lambda: second.said("occupancy-engine-1 ended FAILED"), "the end seen", 60, text)
        _wait_for(
            lambda: _serving(grpc_port) and _history_pid(cluster) not in (None, history),
            "the engine started again",
            said=text,
        )
        live = [j.submission_id for j in jobs.list() if j.live]
        assert len(live) == 1 and live[0] != "occupancy-engine-1", live
        assert len(_drivers(cluster)) == 1


def _stop_engine_jobs(cluster: LocalRayCluster, jobs: RayJobs) -> None:
    """The engine's driver stops as `ray job stop` stops it (SIGTERM: a clean stop)."""
    for job in jobs.list():
        if job.live:
            requests.post(
                f"{cluster.dashboard_url}/api/jobs/{job.submission_id}/stop",
                headers=jobs.headers,
                timeout=30,
            )
    deadline = time.monotonic() + 60
    while _drivers(cluster) and time.monotonic() < deadline:
        time.sleep(1)
