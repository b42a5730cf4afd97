"""How the last scale request went, or is going: a Redis hash any API replica and the CLI read.

A scale is answered at once and runs in a thread of the API replica that took it
(cluster/scale_job.py), which writes each step here as it begins: the state (running, done,
failed), the target layout version and counts, the step's name, how many of `total` steps came
before it, the user shards that handed their devices off so far and how many devices they
moved, when it started and finished (ms since the epoch), a failed one's error and a finished
one's result. Every value is JSON. A replica that died mid-way leaves `running` behind with the
rebalance lock freed: `read` answers `interrupted` then.
"""

import logging
import time

import orjson
import redis

from cluster.rebalance import Lock
from state.wal import PREFIX

log = logging.getLogger(__name__)

KEY = f"{PREFIX}:rebalance:progress"
FIELDS = (
    "id", "state", "target_version", "user_shards", "cell_shards", "ingest_handlers", "step",
    "done", "total", "shards_handed_off", "devices_moved", "started_at", "finished_at", "error",
    "result",
)  # fmt: skip
INTERRUPTED = "the process running it stopped before it finished; run the same scale again"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Progress:
    """The record of one scale (`job_id`: its lock's id), written as it goes."""

    def __init__(self, client: redis.Redis, job_id: str):
        self.client = client
        self.id = job_id
        self._begun = 0
        self._total = 0

    def _set(self, **fields) -> None:
        self.client.hset(KEY, mapping={k: orjson.dumps(v) for k, v in fields.items()})

    def start(self, target: dict, total: int) -> None:
        """A new record (the last one's goes): running towards `target` in `total` steps."""
        self._total = total
        record = dict.fromkeys(FIELDS)
        record.update(id=self.id, state="running", done=0, total=total, **target)
        record.update(shards_handed_off=0, devices_moved=0, started_at=_now_ms())
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(KEY)
        pipe.hset(KEY, mapping={k: orjson.dumps(v) for k, v in record.items()})
        pipe.execute()

    def step(self, name: str) -> None:
        """Step `name` begins; the ones before it are done. Like `handed_off`, best effort:
        a rebalance does not stop for a record that Redis missed (the next write catches up)."""
        done, self._begun = self._begun, self._begun + 1
        try:
            self._set(step=name, done=done)
        except redis.RedisError as exc:
            log.warning("scale %s: step %r not recorded: %s", self.id, name, exc)

    def handed_off(self, shard: str, moved: dict[str, int]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(KEY, "shards_handed_off", 1)
        pipe.hincrby(KEY, "devices_moved", sum(moved.values()))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("scale %s: handoff of %s not recorded: %s", self.id, shard, exc)

    def finish(self, result: dict) -> None:
        self._set(state="done", done=self._total, finished_at=_now_ms(), result=result)

    def fail(self, error: str) -> None:
        self._set(state="failed", finished_at=_now_ms(), error=error)


def read(client: redis.Redis) -> dict | None:
    """The last scale's record (None: there was none); `interrupted` when it says running but
    its holder no longer holds the rebalance lock."""
    record = _record(client)
    if record is None or record["state"] != "running" or Lock.holder(client) == record["id"]:
        return record
    record = _record(client)  # a job writes how it ended before it frees the lock
    if record is not None and record["state"] == "running":
        record.update(state="interrupted", error=INTERRUPTED)
    return record


def _record(client: redis.Redis) -> dict | None:
    raw = client.hgetall(KEY)
    if not raw:
        return None
    stored = {k.decode(): orjson.loads(v) for k, v in raw.items()}
    return {f: stored.get(f) for f in FIELDS}
