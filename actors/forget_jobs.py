"""Finishing forgets in the history actor, which owns the store (state/forgetting.py, steps 2
and 3): run after each snapshot while a job waits, and at once for `DELETE /v1/admin/devices`."""

import logging
from collections.abc import Callable

import redis

from actors.archive import scrub_dead_letters
from actors.spill import Spill, wal_key
from clickhouse.lake import Lake
from clickhouse.store import HistoryStore
from clients.errors import Unavailable
from clients.family import blocking
from clients.users import UserShards
from engine.pseudonym import pseudonym_str
from state import forgetting
from state.forgetting import Job
from state.topology import Topology
from state.wal import Wal

log = logging.getLogger(__name__)

SNAPSHOT_ROUNDS = 3  # snapshot rounds a call runs for history to reach the jobs' cuts


class Finisher:
    """`run` takes every job as far as it can go and says where each stands."""

    def __init__(self, client: redis.Redis, users: UserShards, spill: Spill, lake: Lake | None):
        self.client = client
        self.users = users
        self.spill = spill
        self.lake = lake

    def pending(self) -> int:
        """Forgets not finished (0 while Redis does not answer)."""
        try:
            return int(self.client.hlen(forgetting.JOBS))
        except redis.RedisError:
            return 0

    def waiting(self) -> bool:
        return self.pending() > 0

    def run(
        self,
        topology: Topology,
        store: Callable[[], HistoryStore] | None,
        snapshot: Callable[[], dict],
    ) -> dict[str, str]:
        """{old pseudonym: "done" | "pending"} for every job. `store`: None while history
        writes are paused (the shards still forget at once)."""
        out: dict[str, str] = {}
        jobs = forgetting.jobs(self.client)
        for job in jobs:
            out[pseudonym_str(job.old)] = "pending"
            if job.cut is None:
                self._live(topology, job)
        ready = [j for j in jobs if j.cut is not None]
        if not ready or store is None:
            return out
        try:
            for _ in range(SNAPSHOT_ROUNDS):
                if all(self._archived(j.cut) for j in ready):
                    break
                snapshot()
            history = store()
        except Exception as exc:  # the store is down or paused: the next round tries again
            log.warning("forget waits for history: %s", str(exc).splitlines()[0][:200])
            return out
        done = []
        for job in ready:
            if not self._archived(job.cut):
                continue
            try:
                history.forget_device(job.old, job.fresh)
                if self.lake is not None:  # every lake file that holds its pings, rewritten
                    self.lake.forget(job.old)
                scrub_dead_letters(self.client, job.old, job.fresh)
            except Exception as exc:  # retried whole after the next snapshot
                log.warning("forget of a device in history failed: %s", exc)
                continue
            done.append(job)
        if done:
            self._checkpoint()
        for job in done:
            forgetting.finish(self.client, job)
            out[pseudonym_str(job.old)] = "done"
        return out

    def _live(self, topology: Topology, job: Job) -> None:
        """Step 2, for a job whose shard has not forgotten the device yet."""
        try:
            shard = forgetting.owner(topology, self.client, job.old)
            blocking(self.users.forget(shard, job.old, job.fresh))
            forgetting.forgotten_live(self.client, job)
        except (forgetting.Busy, Unavailable, redis.RedisError) as exc:
            log.warning("forget waits for its user shard: %s", exc)

    def _archived(self, cut: dict[str, str]) -> bool:
        """Whether history holds every entry up to `cut` of each log (none waits in Redis or
        in a spill file)."""
        for name, tip in cut.items():
            wal = Wal(self.client, name)
            if not self.client.exists(wal.stream):
                continue  # a retired shard's log, archived and cleared
            if wal_key(wal.archived()) < wal_key(tip):
                return False
            if any(wal_key(r.first) <= wal_key(tip) for r in self.spill.ranges(name)):
                return False
        return True

    def _checkpoint(self) -> None:
        """Every user shard checkpoints now: the log entries that held a forgotten device are
        covered and archived, so they are trimmed, and the latest checkpoints lack it."""
        try:
            blocking(self.users.checkpoint_all())
        except Unavailable as exc:  # the next periodic checkpoint does it
            log.warning("checkpoint after a forget failed: %s", exc)
