"""The embedded redis-server: supervised, durable as asked, and an operator's Redis checked."""

import signal
import time

import pytest
import redis

from actors.redis_server import EmbeddedRedis, external_warnings

pytestmark = pytest.mark.integration


def test_a_killed_server_is_started_again_on_its_port_with_its_data(tmp_path):
    server = EmbeddedRedis(tmp_path, durability="always")
    client = redis.Redis.from_url(server.start())
    try:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.set("acked", "1")  # fsynced before the reply (always)
        first = server.proc.pid
        server.proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while server.restarts == 0:
            assert time.monotonic() < deadline, "redis-server was not started again"
            time.sleep(0.05)
        assert server.proc.pid != first
        assert client.get("acked") == b"1"  # same port, same files: the client reconnects
    finally:
        server.stop()
    assert server.proc is None  # a stop is not a death: nothing restarts it


def test_a_running_server_takes_the_durability_of_the_next_start(tmp_path):
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        again = EmbeddedRedis(tmp_path, durability="always")
        assert again.start() == url  # reused, not started twice
        assert redis.Redis.from_url(url).config_get("appendfsync")["appendfsync"] == "always"
    finally:
        server.stop()


def test_an_external_redis_that_can_lose_data_is_warned_about(tmp_path):
    server = EmbeddedRedis(tmp_path)
    client = redis.Redis.from_url(server.start())
    try:
        assert external_warnings(client, "everysec") == []
        assert "appendfsync everysec" in external_warnings(client, "always")[0]
        client.config_set("maxmemory", "1gb")
        client.config_set("maxmemory-policy", "allkeys-lru")
        assert any("allkeys-lru" in w for w in external_warnings(client, "everysec"))
        client.config_set("appendonly", "no")
        assert any("appendonly off" in w for w in external_warnings(client, "everysec"))
    finally:
        server.stop()
