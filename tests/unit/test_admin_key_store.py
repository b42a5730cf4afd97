"""Where `occupancy up` keeps the bootstrap admin key: a 0600 file of the data dir, or on
Kubernetes a Secret it patches over the in-cluster API; never its output or a log (which go to
files: `nohup ... > up.log`, a Ray job's driver log). The engine is a stand-in (no Ray in this
tier); the CLI, the key store and the Kubernetes API's HTTPS and RBAC answers are real code
talking to a server that answers as the API server does."""

import base64
import http.server
import json
import logging
import signal
import ssl
import threading
from types import SimpleNamespace
from typing import ClassVar

import pytest
from click.testing import CliRunner

from access.auth import KeyStore
from occupancy import foreground, kube_secret
from occupancy.cli import main
from occupancy.tls import self_signed
from state.private_files import private_dir

SECRET = "0123456789abcdef0123456789abcdef-test-secret"
NAME = "occupancy-admin-key"
TOKEN = "service-account-token"


class HashRedis:
    """The Redis commands of making, checking and revoking a key, over dicts."""

    def __init__(self):
        self.hashes: dict[str, dict[str, bytes]] = {}
        self.values: dict[str, bytes] = {}
        self.stream: list[dict] = []

    def hset(self, name, key=None, value=None, mapping=None):
        h = self.hashes.setdefault(name, {})
        for k, v in ({key: value} if mapping is None else mapping).items():
            h[k if isinstance(k, str) else k.decode()] = str(v).encode()

    def hget(self, name, key):
        return self.hashes.get(name, {}).get(key)

    def hdel(self, name, key):
        return int(self.hashes.get(name, {}).pop(key, None) is not None)

    def set(self, key, value, **_):
        self.values[key] = value.encode() if isinstance(value, str) else value

    def xadd(self, name, fields, **_):
        self.stream.append(fields)

    def pipeline(self, transaction=True):
        calls = []
        client = self

        class Pipe:
            def hdel(self, name, key):
                calls.append((name, key))

            def execute(self):
                return [client.hdel(n, k) for n, k in calls]

        return Pipe()

    def admin_keys(self) -> list[str]:
        from access.auth import KEYS

        return [h for h, v in self.hashes.get(KEYS, {}).items() if v.startswith(b"admin|")]


class StandInEngine:
    """What `running_engine` reads of a started engine; no Ray."""

    redis = HashRedis()

    def __init__(self, settings, serve_api=True):
        self.settings = settings
        self.serve_api = serve_api
        self.grpc_port, self.http_port, self.osmand_port = 50051, 8000, 5055
        self.redis_url = "redis://:hunter2@10.0.0.5:6379/0"
        self.topology = SimpleNamespace(user_shards=["u"], cell_shards=["c"], space_shards=["s"])

    def start(self):
        private_dir(self.settings.data_dir)  # as the engine's start makes it
        return self

    def stop(self):
        pass

    def client(self):
        return type(self).redis


class _KubeApi(http.server.BaseHTTPRequestHandler):
    """Secrets of one namespace; the token may get and patch only NAME (a Role with
    resourceNames), as deploy/rayservice.yaml grants."""

    secrets: ClassVar[dict] = {}
    patch_allowed = True

    def _secret_name(self) -> str | None:
        prefix = "/api/v1/namespaces/occupancy/secrets/"
        return self.path.removeprefix(prefix) if self.path.startswith(prefix) else None

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _allowed(self, verb: str) -> bool:
        name = self._secret_name()
        if self.headers.get("Authorization") != f"Bearer {TOKEN}" or name != NAME:
            return False
        return verb == "get" or type(self).patch_allowed

    def do_GET(self):
        if not self._allowed("get"):
            return self._send(403, {"kind": "Status", "code": 403})
        if NAME not in type(self).secrets:
            return self._send(404, {"kind": "Status", "code": 404})
        return self._send(200, type(self).secrets[NAME])

    def do_PATCH(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self._allowed("patch"):
            return self._send(403, {"kind": "Status", "code": 403})
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self._send(415, {"kind": "Status", "code": 415})
        secret = type(self).secrets[NAME]
        secret["data"] = (secret.get("data") or {}) | body["data"]
        return self._send(200, secret)

    def log_message(self, *args):
        pass


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """A Kubernetes API over HTTPS with an empty NAME, and a pod's service account for it."""
    tls, ca = self_signed(tmp_path / "api")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KubeApi)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _KubeApi.secrets = {NAME: {"kind": "Secret", "metadata": {"name": NAME}}}
    _KubeApi.patch_allowed = True
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "namespace").write_text("occupancy")
    (account / "ca.crt").write_text(ca.read_text())
    monkeypatch.setattr(kube_secret, "SERVICE_ACCOUNT", account)
    yield {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(server.server_address[1]),
    }
    server.shutdown()
    server.server_close()


@pytest.fixture
def up(monkeypatch, tmp_path):
    """`occupancy up --no-api` with the stand-in engine; returns (exit code, everything it wrote
    to stdout, stderr and the log)."""
    StandInEngine.redis = HashRedis()
    monkeypatch.setattr(foreground, "Engine", StandInEngine)
    monkeypatch.setattr(foreground, "run_until_stopped", lambda engine, settings: None)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    logs: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            logs.append(self.format(record))

    collector = Collect(logging.DEBUG)
    logging.getLogger().addHandler(collector)

    def run(**env):
        base = {"OCC_DATA_DIR": str(tmp_path / "data"), "OCC_SECRET": SECRET}
        result = CliRunner().invoke(main, ["up", "--no-api"], env=base | env)
        return result.exit_code, result.output + "\n".join(logs)

    yield run
    logging.getLogger().removeHandler(collector)
    for s, handler in handlers.items():
        signal.signal(s, handler)


def _secret_value() -> str | None:
    data = _KubeApi.secrets[NAME].get("data") or {}
    return base64.b64decode(data["key"]).decode() if "key" in data else None


def _files_holding(folder, text: str) -> list[str]:
    return [
        str(f) for f in folder.rglob("*") if f.is_file() and text in f.read_text(errors="replace")
    ]


def test_on_kubernetes_the_admin_key_goes_to_the_secret_and_nowhere_else(up, kube, tmp_path):
    code, said = up(OCC_ADMIN_KEY_SECRET=NAME, **kube)
    assert code == 0, said
    key = _secret_value()
    assert key and key.startswith("occ_admin_")
    assert KeyStore(StandInEngine.redis).role(key) == "admin"
    assert key not in said and "occ_admin_" not in said
    assert f"admin key     in Kubernetes secret {NAME} (kubectl get secret {NAME}" in said
    assert not (tmp_path / "data" / "admin.key").exists()
    assert _files_holding(tmp_path, key) == []  # no file here, no log, holds it


def test_a_restarted_up_keeps_the_secrets_key_and_replaces_a_revoked_one(up, kube):
    assert up(OCC_ADMIN_KEY_SECRET=NAME, **kube)[0] == 0
    first = _secret_value()
    code, said = up(OCC_ADMIN_KEY_SECRET=NAME, **kube)
    assert code == 0 and _secret_value() == first  # not a new key at every start
    assert len(StandInEngine.redis.admin_keys()) == 1
    KeyStore(StandInEngine.redis).revoke(first)
    code, said = up(OCC_ADMIN_KEY_SECRET=NAME, **kube)
    second = _secret_value()
    assert code == 0 and second != first and KeyStore(StandInEngine.redis).role(second) == "admin"
    assert second not in said


def test_a_secret_it_may_not_write_stops_up_and_leaves_no_usable_key(up, kube):
    _KubeApi.patch_allowed = False
    code, said = up(OCC_ADMIN_KEY_SECRET=NAME, **kube)
    assert code == 1
    assert f"may not patch secret {NAME} (403)" in said and "Role in deploy/rayservice.yaml" in said
    assert StandInEngine.redis.admin_keys() == []  # the key made was revoked at once
    assert "occ_admin_" not in said


def test_a_missing_secret_or_no_service_account_is_said_in_one_line(up, kube, tmp_path):
    del _KubeApi.secrets[NAME]
    code, said = up(OCC_ADMIN_KEY_SECRET=NAME, **kube)
    assert code == 1 and f"no secret {NAME} in this namespace: create it first" in said
    code, said = up(OCC_ADMIN_KEY_SECRET=NAME)  # not in a pod
    assert code == 1 and "not in a Kubernetes pod" in said


def test_elsewhere_the_admin_key_is_a_0600_file_and_not_in_the_output(up, tmp_path):
    code, said = up()
    assert code == 0, said
    path = tmp_path / "data" / "admin.key"
    key = path.read_text().strip()
    assert path.stat().st_mode & 0o777 == 0o600
    assert key not in said and f"admin key     in {path} (0600; `cat` it)" in said
    assert _files_holding(tmp_path, key) == [str(path)]
