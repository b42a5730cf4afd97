"""The rebalance lock and a scale's progress record against a real Redis (no Ray needed)."""

import pytest

from cluster import progress
from cluster.rebalance import LOCK, LOCK_TTL_S, Lock, RebalanceError
from state import redis_client
from state.redis_server import EmbeddedRedis

pytestmark = pytest.mark.integration

TARGET = {"target_version": 3, "user_shards": 3, "cell_shards": 2, "ingest_handlers": None}


@pytest.fixture
def client(tmp_path):
    server = EmbeddedRedis(tmp_path)
    yield redis_client.connect(server.start())
    server.stop()


def test_one_holder_at_a_time_and_only_the_holder_frees_or_renews_it(client):
    first, second = Lock(client), Lock(client)
    first.acquire()
    with pytest.raises(RebalanceError, match="under way"):
        second.acquire()
    assert Lock.holder(client) == first.id
    client.expire(LOCK, 5)
    assert client.eval(Lock._RENEW, 1, LOCK, first.id, LOCK_TTL_S) == 1
    assert client.ttl(LOCK) > 5
    assert client.eval(Lock._RENEW, 1, LOCK, second.id, LOCK_TTL_S) == 0
    second.release()  # not its lock: nothing happens
    assert Lock.holder(client) == first.id
    first.release()
    assert Lock.holder(client) is None
    second.acquire()
    second.release()


def test_a_record_goes_from_running_through_its_steps_to_done(client):
    lock = Lock(client)
    lock.acquire()
    record = progress.Progress(client, lock.id)
    record.start(TARGET, 8)
    assert progress.read(client) | {"started_at": 0} == {
        **dict.fromkeys(progress.FIELDS), **TARGET, "id": lock.id, "state": "running",
        "done": 0, "total": 8, "shards_handed_off": 0, "devices_moved": 0, "started_at": 0,
    }  # fmt: skip
    for name in ("store target", "start cell shards", "start user shards"):
        record.step(name)
    record.step("handoff")
    record.handed_off("user-0", {"user-2": 40})
    record.handed_off("user-1", {"user-2": 30, "user-3": 5})
    now = progress.read(client)
    assert (now["step"], now["done"], now["shards_handed_off"], now["devices_moved"]) == (
        "handoff", 3, 2, 75,
    )  # fmt: skip
    record.finish({"version": 3, "changed": True})
    lock.release()
    done = progress.read(client)
    assert done["state"] == "done" and done["done"] == 8 and done["error"] is None
    assert done["result"] == {"version": 3, "changed": True}
    assert done["finished_at"] >= done["started_at"]


def test_a_failure_is_kept_with_its_error(client):
    lock = Lock(client)
    lock.acquire()
    record = progress.Progress(client, lock.id)
    record.start(TARGET, 8)
    record.step("store target")
    record.fail("RuntimeError: boom")
    lock.release()
    failed = progress.read(client)
    assert (failed["state"], failed["error"], failed["step"]) == (
        "failed", "RuntimeError: boom", "store target",
    )  # fmt: skip


def test_a_running_record_whose_holder_is_gone_reads_as_interrupted(client):
    lock = Lock(client)
    lock.acquire()
    progress.Progress(client, lock.id).start(TARGET, 8)
    assert progress.read(client)["state"] == "running"
    lock.release()  # as if its lock had expired: the process holding it died
    record = progress.read(client)
    assert record["state"] == "interrupted" and "run the same scale again" in record["error"]
    newer = Lock(client)  # another lock holder does not make the old record running again
    newer.acquire()
    assert progress.read(client)["state"] == "interrupted"
    newer.release()
