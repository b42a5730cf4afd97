"""The write-ahead log and its checkpoint against a real Redis: a checkpoint never goes back."""

import pytest

from state import redis_client
from state.redis_server import EmbeddedRedis
from state.wal import Wal

pytestmark = pytest.mark.integration


@pytest.fixture
def wal(tmp_path):
    server = EmbeddedRedis(tmp_path)
    client = redis_client.connect(server.start())
    yield Wal(client, "user-0")
    server.stop()


def test_a_checkpoint_of_an_earlier_entry_never_replaces_a_later_one(wal):
    ids = [wal.append({"n": i}) for i in range(5)]
    assert wal.save_checkpoint({"upto": 3}, ids[3])
    # a late writer (a checkpoint child that outlived its timeout) with older state
    assert not wal.save_checkpoint({"upto": 1}, ids[1])
    assert wal.load_checkpoint() == ({"upto": 3}, ids[3])
    assert [i for i, _ in wal.entries_after("0-0")] == ids[4:]  # trimmed behind entry 3 only
    assert wal.save_checkpoint({"upto": 3, "again": True}, ids[3])  # the same entry: stored
    assert wal.save_checkpoint({"upto": 4}, ids[4])
    assert wal.load_checkpoint() == ({"upto": 4}, ids[4])
    assert wal.length() == 0


def test_a_checkpoint_keeps_the_entries_history_has_not_archived(wal):
    wal.start_archive()
    ids = [wal.append({"n": i}) for i in range(4)]
    wal.set_archived(ids[1])
    assert wal.save_checkpoint({"upto": 3}, ids[3])
    assert [i for i, _ in wal.entries_after("0-0")] == ids[2:]
