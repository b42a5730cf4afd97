"""serve_apps/config.yaml is a valid Serve deploy config whose builder makes the API app."""

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]


def test_config_validates_with_serves_own_schema():
    config = yaml.safe_load((ROOT / "serve_apps" / "config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    [app] = schema.applications
    assert app.import_path == "serve_apps.app:app_builder"
    [deployment] = app.deployments
    assert deployment.name == "QueryApi"
    assert deployment.autoscaling_config["max_replicas"] >= 2


def test_builder_makes_the_query_app(tmp_path):
    from serve_apps.app import app_builder

    (tmp_path / "redis-data").mkdir()
    (tmp_path / "redis-data" / "redis.port").write_text("6399")
    app = app_builder({"data_dir": str(tmp_path), "k_min": 3})
    assert type(app).__name__ == "Application"


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
