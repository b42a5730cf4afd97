"""cluster.yaml, the on-prem example and the KubeRay manifest pass Ray's own validation."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["cluster.yaml", "deploy/cluster-local.yaml"])
def test_cluster_launcher_configs_validate(path):
    config = yaml.safe_load((ROOT / path).read_text())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    head = " ".join(config["head_start_ray_commands"])
    assert "RAY_REDIS_ADDRESS" in " ".join(config["head_setup_commands"])  # GCS fault tolerance
    assert "occupancy up" in head and "ray start --head" in head
    assert any("pip install" in c and "occupancy" in c for c in config["setup_commands"])
    assert "ray start --address" in " ".join(config["worker_start_ray_commands"])


@pytest.mark.parametrize("path", ["cluster.yaml", "deploy/cluster-local.yaml"])
def test_cluster_launcher_configs_ship_no_secret_and_give_every_node_the_file(path):
    from access.keyring import PLACEHOLDERS

    text = (ROOT / path).read_text()
    assert "OCC_SECRET=" not in text and not any(p in text for p in PLACEHOLDERS)
    config = yaml.safe_load(text)
    # the operator's own file, copied to every node, named for every process that needs it
    [remote] = [r for r, local in config["file_mounts"].items() if "occupancy/secret" in local]
    setup = " ".join(config["setup_commands"])
    assert f"chmod 600 ~/{Path(remote).name}" in setup and "OCC_SECRET_FILE" in setup
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[commands] if "ray start" in c or "occupancy up" in c]
        assert starts and all("source ~/secret.env" in c for c in starts), commands


def _kubernetes(kind: str) -> dict:
    """The one object of `kind` in deploy/rayservice.yaml."""
    [found] = [
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "rayservice.yaml").read_text())
        if d["kind"] == kind
    ]
    return found


def test_rayservice_takes_the_secret_from_a_kubernetes_secret():
    rayservice = _kubernetes("RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for pod in pods:
        env = {e["name"]: e for e in pod["template"]["spec"]["containers"][0]["env"]}
        assert "value" not in env["OCC_SECRET"]
        reference = env["OCC_SECRET"]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "occupancy", "key": "secret"}


def test_cluster_yaml_has_head_and_worker_types_with_bounds():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and set(types) == {"head", "worker"}
    worker = types["worker"]
    assert 0 < worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    assert worker["resources"]["CPU"] > 0


def test_a_broken_config_is_refused():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["available_node_types"]["worker"]["min_workers"] = 99
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(config))


def test_rayservice_serves_the_serve_config_and_the_job_starts_the_engine():
    """The schemas, the ingest Service's reach and the supervised driver: test_manifests.py."""
    rayservice, service = _kubernetes("RayService"), _kubernetes("Service")
    assert rayservice["apiVersion"] == "ray.io/v1" and rayservice["kind"] == "RayService"
    serve_config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert serve_config == yaml.safe_load((ROOT / "serve_apps" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(serve_config)
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == __import__("ray").__version__
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "lifecycle" not in head  # no hook starts the driver with nothing to restart it
    job = _kubernetes("Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][:2] == ["occupancy", "supervise"]  # which runs `occupancy up --no-api`
    env = {e["name"] for e in head["env"]}
    assert {"OCC_REDIS_URL", "OCC_CLICKHOUSE_URL", "OCC_SECRET"} <= env
    [workers] = cluster["workerGroupSpecs"]
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    assert service["kind"] == "Service" and service["spec"]["ports"][0]["port"] == 50051


def test_dashboard_and_alerts_use_only_metrics_the_engine_exports():
    import json
    import re

    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exported = set()
    for path in [*(ROOT / "actors").glob("*.py"), ROOT / "serve_apps" / "api.py"]:
        exported |= set(re.findall(r'"(occupancy_[a-z_]+)"', path.read_text()))
    assert len(exported) >= 10
    expressions = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    alerts = yaml.safe_load((ROOT / "deploy" / "alerts.yaml").read_text())
    expressions += [(r["alert"], r["expr"]) for g in alerts["groups"] for r in g["rules"]]
    for title, expr in expressions:
        names = set(re.findall(r"occupancy_[a-z_]+", expr))
        bases = {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}
        assert bases and bases <= exported, (title, bases - exported)


def test_the_image_leaves_a_local_data_dir_and_its_secrets_out():
    # the build context is the checkout (deploy/Dockerfile): Docker reads its .dockerignore
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for kept_out in (".occupancy", "**/*.key", "**/secret", "**/redis.password", ".venv", ".git"):
        assert kept_out in patterns, kept_out
    assert "COPY --chown=ray:users . " in (ROOT / "deploy" / "Dockerfile").read_text()


def test_only_ingest_and_http_face_everyone_on_kubernetes():
    policy = _kubernetes("NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # the pods it selects are the Ray pods (test_manifests.py checks the labels' reach)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/part-of": "occupancy", "ray.io/is-ray-node": "yes"}
    open_to_all = [r for r in policy["spec"]["ingress"] if "from" not in r]
    assert [sorted(p["port"] for p in r["ports"]) for r in open_to_all] == [[8000, 50051]]
    dashboard = [
        r
        for r in policy["spec"]["ingress"]
        if {"port": 8265, "protocol": "TCP"} in r.get("ports", [])
    ]
    assert dashboard and all(r["from"] for r in dashboard)


def test_the_cluster_configs_keep_the_dashboard_and_credentials_to_themselves():
    for path in ("cluster.yaml", "deploy/cluster-local.yaml"):
        text = (ROOT / path).read_text()
        assert "dashboard-host=0.0.0.0" not in text, path
        assert "clickhouse-url" in text and ":secret@" not in text, path


def test_every_ray_pod_serves_ingest_with_the_mounted_tls_secret():
    rayservice = _kubernetes("RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        [volume] = [v for v in pod["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == "occupancy-tls"
        assert volume["secret"]["defaultMode"] & 0o007 == 0  # not for every user
        [container] = pod["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "tls"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["OCC_TLS_CERT"].startswith(mount["mountPath"] + "/")
        assert env["OCC_TLS_KEY"].startswith(mount["mountPath"] + "/")
