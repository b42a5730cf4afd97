"""serve_apps/config.yaml is a valid Serve deploy config whose builder makes the API app."""

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]


def test_config_validates_with_serves_own_schema():
    config = yaml.safe_load((ROOT / "serve_apps" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    app, streams = schema.applications
    assert app.import_path == "occupancy.serve_app:app_builder"
    [deployment] = app.deployments
    assert deployment.name == "QueryApi"
    assert deployment.autoscaling_config["max_replicas"] >= 2
    # streams have replicas of their own, with slots for many more open streams than queries
    assert streams.import_path == "occupancy.serve_app:stream_builder"
    assert streams.route_prefix == "/v1/stream"
    [stream] = streams.deployments
    assert stream.name == "StreamApi"
    assert stream.max_ongoing_requests >= 10 * deployment.max_ongoing_requests


def test_builder_makes_the_query_app(tmp_path):
    from occupancy.serve_app import app_builder

    (tmp_path / "redis-data").mkdir()
    (tmp_path / "redis-data" / "redis.port").write_text("6399")
    app = app_builder({"data_dir": str(tmp_path), "k_min": 3})
    assert type(app).__name__ == "Application"
    from occupancy.serve_app import stream_builder

    assert type(stream_builder({"data_dir": str(tmp_path)})).__name__ == "Application"


def test_the_haproxy_wrapper_never_runs_itself(tmp_path, monkeypatch):
    """An environment made from serve_env (a cluster node's, `occupancy up`'s on its head)
    names the wrapper as Ray's HAProxy binary: written again, it still runs the real one."""
    from occupancy.http_ingress import serve_env

    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    run_dir = tmp_path / "run"
    first = serve_env("haproxy", run_dir)["RAY_SERVE_HAPROXY_BINARY_PATH"]
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", first)
    again = serve_env("haproxy", run_dir)["RAY_SERVE_HAPROXY_BINARY_PATH"]
    assert again == first
    script = Path(again).read_text()
    runs = script.rsplit("exec ", 1)[1].split('"')[1]
    with open(runs, "rb") as f:
        assert b"occupancy" not in f.read(256), runs  # a binary, not a wrapper


def test_haproxy_terminates_tls_on_the_http_frontend_alone(tmp_path, monkeypatch):
    """The wrapper adds `ssl crt` to the bind line under `frontend http_frontend` (not to the
    metrics, stats or gRPC frontends), once, with certificate and key in one 0600 file."""
    import subprocess

    from occupancy.http_ingress import serve_env
    from occupancy.tls import self_signed

    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    tls, _ = self_signed(tmp_path / "data")
    run_dir = tmp_path / "run"
    wrapper = serve_env("haproxy", run_dir, tls.cert, tls.key)["RAY_SERVE_HAPROXY_BINARY_PATH"]
    pem = Path(wrapper).parent / "tls.pem"  # a short folder of its own when run_dir is long
    assert pem.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" in pem.read_text() and "CERTIFICATE" in pem.read_text()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "defaults\n    mode http\nfrontend prometheus\n    bind :9101\n"
        "frontend http_frontend\n    bind 0.0.0.0:8000\n    default_backend x\n"
    )
    # the wrapper edits the file named after -f, then runs HAProxy's check mode on it
    for _ in range(2):
        subprocess.run(["sh", wrapper, "-c", "-f", str(config)], capture_output=True, timeout=30)
    lines = config.read_text().splitlines()
    assert lines.count(f"    bind 0.0.0.0:8000 ssl crt {pem} alpn http/1.1") == 1
    assert "    bind :9101" in lines and "    timeout http-request 10s" in lines
