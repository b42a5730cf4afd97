"""TLS on both planes of `occupancy up`, with certificates made for the test: gRPC ingest
(mutual TLS with a client CA) and the HTTP API behind Serve's HAProxy, reached by the CLI,
the simulator and plain clients."""

import subprocess
import sys
import time

import grpc
import pytest
import requests

from protos.occupancy.v1 import occupancy_pb2 as pb
from protos.occupancy.v1 import occupancy_pb2_grpc as pbg
from tests.engine_process import ROOT, EngineProcess, engine_env
from tests.tls_certs import client_pair, make_ca

pytestmark = pytest.mark.integration


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "occupancy.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _send(channel: grpc.Channel, key: str) -> pb.SendPingsResponse:
    ping = pb.Ping(device_id="tls-phone", ts_ms=time.time_ns() // 1_000_000, lat=52.66, lng=-8.63)
    stub = pbg.IngestServiceStub(channel)
    return stub.SendPings(
        pb.SendPingsRequest(pings=[ping]), metadata=[("authorization", f"Bearer {key}")], timeout=20
    )


def test_both_planes_speak_tls_and_ingest_asks_for_client_certificates(tmp_path):
    clients = tmp_path / "clients"
    clients.mkdir()
    client_ca, client_ca_key = make_ca(clients, "gateways' CA")
    cert, key = client_pair(clients, client_ca, client_ca_key, "gateway-7")
    stranger_ca, stranger_key = make_ca(tmp_path, "another CA")
    stranger_cert, stranger_key_file = client_pair(tmp_path, stranger_ca, stranger_key, "x")

    engine = EngineProcess(tmp_path, "--tls-self-signed", OCC_TLS_CLIENT_CA=str(client_ca))
    try:
        text = "".join(engine.output)
        ca = tmp_path / "data" / "tls" / "ca.pem"
        assert "over TLS, mutual" in text and f"https://127.0.0.1:{engine.http_port}" in text
        target = f"127.0.0.1:{engine.grpc_port}"
        root = ca.read_bytes()

        # gRPC: a client certificate the client CA signed gets in; none, or another CA's, not
        mutual = grpc.ssl_channel_credentials(root, key.read_bytes(), cert.read_bytes())
        assert _send(grpc.secure_channel(target, mutual), engine.keys["ingest"]).accepted == 1
        for credentials in (
            grpc.ssl_channel_credentials(root),
            grpc.ssl_channel_credentials(
                root, stranger_key_file.read_bytes(), stranger_cert.read_bytes()
            ),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                _send(grpc.secure_channel(target, credentials), engine.keys["ingest"])
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):  # plaintext to a TLS port
            _send(grpc.insecure_channel(target), engine.keys["ingest"])

        # HTTP: HTTPS with the engine's CA; plain HTTP or an unknown CA fail
        url = f"https://127.0.0.1:{engine.http_port}"
        health = requests.get(f"{url}/v1/health", verify=str(ca), timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        top = requests.get(
            f"{url}/v1/top", params={"n": 5}, verify=str(ca), timeout=30,
            headers={"authorization": f"Bearer {engine.admin}"},
        )  # fmt: skip
        assert top.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/v1/health", verify=str(stranger_ca), timeout=30)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{engine.http_port}/v1/health", timeout=30)

        # the CLI of the data dir finds the scheme and the CA by itself
        status = _cli(engine.env, "status")
        assert status.returncode == 0, status.stderr
        assert "user-0" in status.stdout
    finally:
        engine.stop()


def test_tls_files_that_do_not_load_start_nothing(tmp_path):
    env, _, _ = engine_env(tmp_path)
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate\n")
    for extra in (
        {"OCC_TLS_CERT": str(bad)},  # a certificate without its key
        {"OCC_TLS_CERT": str(bad), "OCC_TLS_KEY": str(bad)},
    ):
        done = _cli(env | extra, "up")
        assert done.returncode == 2, done.stdout + done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("occupancy: ") and "TLS" in line
    assert not (tmp_path / "data" / "redis-data").exists()  # nothing was started
