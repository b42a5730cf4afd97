"""A scale request: refused at once when it cannot run, otherwise run in the background.

`begin` does, within the request, what can be known at once: it takes the rebalance lock
(RebalanceError while another rebalance runs), works out the target layout (RebalanceError
while an unfinished one aims at other counts), prices the actors it would start
(fit.DoesNotFit) and records the job as running (cluster/progress.py). `run` then moves the
shards and changes the ingest handlers, blocking (the API replica runs it in a thread and has
answered 202 already), records how it ended and frees the lock. A failed or interrupted job
leaves its target pending, as a failed rebalance always did: the same request finishes it.
"""

import logging
from dataclasses import dataclass

import ray

from cluster import rebalance
from cluster.progress import Progress
from state import layout as layouts
from state import redis_client
from state.topology import Topology

log = logging.getLogger(__name__)


@dataclass
class Job:
    topology: Topology
    user_shards: int | None
    cell_shards: int | None
    ingest_handlers: int | None
    lock: rebalance.Lock
    progress: Progress
    target: dict  # target_version and the target counts

    @property
    def moves_shards(self) -> bool:
        return self.user_shards is not None or self.cell_shards is not None

    def accepted(self) -> dict:
        """The 202's body."""
        return {"id": self.lock.id, "state": "running", **self.target}


def begin(
    topology: Topology,
    user_shards: int | None,
    cell_shards: int | None,
    ingest_handlers: int | None,
) -> Job:
    """Takes the lock and records the job as running, or raises why it cannot run."""
    client = redis_client.connect(topology.redis_url)
    lock = rebalance.Lock(client)
    lock.acquire()
    try:
        moves = user_shards is not None or cell_shards is not None
        if moves:
            _, goal = rebalance.plan(client, topology, user_shards, cell_shards)
        else:
            goal = layouts.layout_of(layouts.current(topology, client))
        rebalance.check_scale(topology, user_shards, cell_shards, ingest_handlers)
        target = {
            "target_version": goal["version"],
            "user_shards": len(goal["user_shards"]),
            "cell_shards": len(goal["cell_shards"]),
            "ingest_handlers": ingest_handlers,
        }
        steps = (len(rebalance.STEPS) if moves else 0) + int(ingest_handlers is not None)
        progress = Progress(client, lock.id)
        progress.start(target, steps)
    except BaseException:
        lock.release()
        raise
    return Job(topology, user_shards, cell_shards, ingest_handlers, lock, progress, target)


def run(job: Job) -> None:
    """The rebalance, then the ingest handlers' change; how it ended goes to the job's record
    (nothing is raised: the request that started it has been answered)."""
    try:
        result: dict = {}
        if job.moves_shards:
            result = rebalance.run(
                job.lock.client, job.topology, job.user_shards, job.cell_shards, job.progress
            )
        if job.ingest_handlers is not None:
            job.progress.step("ingest handlers")
            result.update(rebalance.scale_ingest(job.topology, job.ingest_handlers))
        job.progress.finish(result)
    except Exception as exc:
        log.warning("scale %s failed", job.lock.id, exc_info=True)
        try:
            job.progress.fail(describe(exc))
        except Exception:  # Redis unreachable: the record says running, the lock expires
            log.warning("could not record how scale %s failed", job.lock.id, exc_info=True)
    finally:
        try:
            job.lock.release()
        except Exception:
            log.warning("could not free the rebalance lock (it expires)", exc_info=True)


def describe(exc: BaseException) -> str:
    """One line for an operator: the exception a remote call raised rather than Ray's wrapper,
    and the first line of its message."""
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        exc = exc.cause
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:1000]
