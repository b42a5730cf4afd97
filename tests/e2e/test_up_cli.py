"""`occupancy up`, `simulate`, `token` and `keys` as a user runs them."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import requests

from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from tests.engine_process import ROOT, engine_env, wait_ready

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "occupancy.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_up_simulate_and_credentials(tmp_path):
    env, port, http_port = engine_env(tmp_path)
    up = subprocess.Popen(
        [sys.executable, "-m", "occupancy.cli", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        text = "".join(wait_ready(up))
        assert f"127.0.0.1:{port}" in text
        data = tmp_path / "data"
        admin = (data / "admin.key").read_text().strip()
        password = (data / "redis-data" / "redis.password").read_text().strip()
        assert "occ_admin_" not in text and password not in text  # the output goes to logs
        assert f"admin key     in {data / 'admin.key'}" in text
        assert data.stat().st_mode & 0o777 == 0o700  # the AOF, the secret and keys inside
        assert (data / "admin.key").stat().st_mode & 0o777 == 0o600

        health = requests.get(f"http://127.0.0.1:{http_port}/v1/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        # the targets a load balancer would use answer too: under `haproxy`, HAProxy itself,
        # which serves every app (the live streams' under /v1/stream too)
        targets = json.loads((tmp_path / "data" / "targets.json").read_text())
        assert targets and all((t["app"], t["route_prefix"]) == ("api", "/") for t in targets)
        for t in targets:
            direct = requests.get(f"http://{t['ip']}:{t['port']}/v1/health", timeout=10)
            assert direct.status_code == 200
            stream = requests.get(f"http://{t['ip']}:{t['port']}/v1/stream", timeout=10)
            assert stream.status_code == 401  # the stream app's replica: a key is needed

        sim = _cli("simulate", "--devices", "300", "--interval", "1", "--duration", "3", env=env)
        assert sim.returncode == 0, sim.stdout + sim.stderr
        accepted = [int(n.replace(",", "")) for n in re.findall(r"accepted ([\d,]+)", sim.stdout)]
        assert accepted and accepted[-1] > 0 and accepted == sorted(accepted)

        tok = _cli("token", "phone-42", env=env)
        assert tok.returncode == 0 and tok.stdout.startswith("dev2."), tok.stderr
        key = _cli("keys", "create", "--role", "viewer", env=env)
        assert key.returncode == 0 and key.stdout.startswith("occ_viewer_")
        bad = _cli("keys", "create", "--role", "root", env=env)
        assert bad.returncode != 0 and "root" in bad.stderr
        _credential_lifecycle(env, port, http_port)
        top = requests.get(
            f"http://127.0.0.1:{http_port}/v1/top",
            params={"n": 3, "res": 7},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        assert top.status_code == 200 and top.json()["cells"], top.text
        table = _cli("top", "-n", "3", "--res", "7", env=env)
        assert table.returncode == 0 and "top 3 at res 7" in table.stdout, table.stderr
        status = _cli("status", env=env)
        assert status.returncode == 0 and "user-0" in status.stdout, status.stderr
        assert "archive lag" in status.stdout
        scaled = _cli(
            "scale", "--user-shards", "3", "--cell-shards", "3", "--ingest-handlers", "3",
            env=env, timeout=300,
        )  # fmt: skip
        assert scaled.returncode == 0, scaled.stderr
        assert "now 3 user and 3 cell shards" in scaled.stdout, scaled.stdout
        assert "3 ingest handlers" in scaled.stdout
        status = _cli("status", env=env)
        assert "layout 1: 3 user, 3 cell" in status.stdout and "user-2" in status.stdout
        again = requests.get(
            f"http://127.0.0.1:{http_port}/v1/top",
            params={"n": 3, "res": 7},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        assert again.json()["cells"] == top.json()["cells"]  # the fleet stopped: nothing moved
        as_json = _cli("top", "-n", "3", "--res", "7", "--json", env=env)
        assert len(json.loads(as_json.stdout)["cells"]) == 3
        bad = _cli("heatmap", "1,2,3", env=env)
        assert bad.returncode != 0 and "bad_bbox" in bad.stderr
        assert _cli("forget", "bus-000001", env=env).stdout.strip() == "forgotten"
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, rest
    assert "stopped" in rest


def _until(check, what: str, timeout_s: float = 30.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, what
        time.sleep(0.05)
    return time.monotonic() - start


def _credential_lifecycle(env: dict, port: int, http_port: int) -> None:
    """Keys listed and revoked by id, a token with a lifetime revoked by its id, a signing
    key rotated: all with the CLI, while the engine runs."""
    made = _cli("keys", "create", "--role", "viewer", "--label", "e2e dashboard", env=env)
    key_id = re.search(r"id (\w+)", made.stderr).group(1)
    listed = _cli("keys", "list", "--json", env=env)
    [row] = [k for k in json.loads(listed.stdout) if k["id"] == key_id]
    assert row["role"] == "viewer" and row["label"] == "e2e dashboard"
    assert "e2e dashboard" in _cli("keys", "list", env=env).stdout
    spaces = f"http://127.0.0.1:{http_port}/v1/spaces"
    viewer = {"Authorization": f"Bearer {made.stdout.strip()}"}
    assert requests.get(spaces, headers=viewer, timeout=10).status_code == 200
    revoked = _cli("keys", "revoke", "--id", key_id, env=env)
    assert revoked.returncode == 0 and revoked.stdout.strip() == "revoked", revoked.stderr
    _until(lambda: requests.get(spaces, headers=viewer, timeout=10).status_code == 401, "key")
    assert _cli("keys", "revoke", "--id", key_id, env=env).returncode != 0  # gone already

    issued = _cli("token", "phone-43", "--ttl", "30d", env=env)
    token = issued.stdout.strip()
    token_id = re.search(r"token id (tok_\w+)", issued.stderr).group(1)
    assert "expires" in issued.stderr
    stub = pbg.IngestServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

    def send() -> grpc.StatusCode:
        ping = pb.Ping(device_id="phone-43", ts_ms=int(time.time() * 1000), lat=52.66, lng=-8.62)
        try:
            stub.SendPings(
                pb.SendPingsRequest(pings=[ping]), metadata=[("authorization", f"Bearer {token}")]
            )
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    assert send() == grpc.StatusCode.OK
    gone = _cli("token", "revoke", token_id, env=env)
    assert gone.returncode == 0 and token_id in gone.stdout, gone.stderr
    _until(lambda: send() == grpc.StatusCode.UNAUTHENTICATED, "token")

    kid = _cli("keys", "rotate-signing", env=env).stdout.strip()
    signing = _cli("keys", "signing", env=env).stdout
    assert re.search(rf"{kid}\s.*current", signing) and "previous" in signing


def test_up_and_the_cli_work_from_inside_the_data_dir(tmp_path):
    """Started with the data dir as its working directory (which holds folders named like the
    engine's packages, as an old data dir or a checkout does), every Ray worker still imports
    the installed packages."""
    env, _, http_port = engine_env(tmp_path)
    data = tmp_path / "data"
    for package in ("clickhouse", "engine", "actors", "protos", "serve_apps", "redis"):
        (data / package).mkdir(parents=True)
        (data / package / "__init__.py").write_text("raise ImportError('shadowed')\n")
    occupancy = str(Path(sys.executable).parent / "occupancy")  # the installed command
    up = subprocess.Popen(
        [occupancy, "up"], cwd=data, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines = []
    try:
        lines += wait_ready(up)
        health = requests.get(f"http://127.0.0.1:{http_port}/v1/health", timeout=10)
        assert health.status_code == 200, health.text
        sim = subprocess.run(
            [occupancy, "simulate", "--devices", "50", "--interval", "1", "--duration", "2"],
            cwd=data, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sim.returncode == 0, sim.stdout + sim.stderr
        status = subprocess.run(
            [occupancy, "status"], cwd=data, env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0 and "user-0" in status.stdout, status.stderr
        assert (data / "redis-data").is_dir() and (data / "clickhouse-data").is_dir()
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, "".join(lines) + rest
