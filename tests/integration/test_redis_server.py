"""The embedded redis-server: supervised, durable as asked, and an operator's Redis checked."""

import signal
import time

import pytest
import redis

from state.redis_server import EmbeddedRedis, external_warnings

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


def test_only_this_user_reaches_the_server_or_its_files(tmp_path):
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    folder = tmp_path / "redis-data"
    try:
        port = int((folder / "redis.port").read_text())
        with pytest.raises(redis.AuthenticationError):  # the port alone is not enough
            redis.Redis(port=port).set("occ:keys", "x")
        client = redis.Redis.from_url(url)
        client.set("acked", "1")
        client.bgrewriteaof()
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert folder.stat().st_mode & 0o777 == 0o700
        for name in ("redis.password", "redis.conf"):
            assert (folder / name).stat().st_mode & 0o777 == 0o600, name
        written = [p for p in folder.rglob("*") if p.is_file()]
        assert any("appendonly" in p.name for p in written)
        # what redis-server writes itself (AOF, log) is created with no access for others
        assert all(p.stat().st_mode & 0o077 == 0 for p in written), [
            (p.name, oct(p.stat().st_mode)) for p in written
        ]
    finally:
        server.stop()


def test_a_server_started_without_a_password_gets_one(tmp_path):
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        # as an earlier version left it: no password, still running from this folder
        redis.Redis.from_url(url).config_set("requirepass", "")
        again = EmbeddedRedis(tmp_path, supervise=False)
        assert again.start() == url  # reused, not started twice over the same files
        port = int((tmp_path / "redis-data" / "redis.port").read_text())
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
    finally:
        server.stop()
