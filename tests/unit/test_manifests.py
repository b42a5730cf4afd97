"""deploy/*.yaml as Kubernetes and KubeRay take them, checked offline: every core object against
Kubernetes' own schema (a pinned version, unknown fields refused as `kubectl apply` refuses
them), the RayService against KubeRay's CRD (deploy/crds/, vendored) with its pod templates as
core objects; and what the deployment relies on across objects: the ingest Service reaches every
pod that runs ingest handlers, the engine's driver is supervised, no key shows in a command or a
manifest. The serve config and the secrets' wiring: test_cluster_config.py."""

import copy
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# the oldest Kubernetes the manifests are for: the Job's podFailurePolicy is GA from 1.31
KUBERNETES = "1.31.0"
NOT_KUBERNETES = {  # deploy/*.yaml that are not manifests, and what they are
    "cluster-local.yaml": "a Ray cluster launcher config (test_cluster_config.py)",
    "alerts.yaml": "Prometheus alert rules (test_alert_rules.py)",
    "alerts.test.yaml": "promtool's tests of those rules",
}
CUSTOM = {("ray.io/v1", "RayService"): DEPLOY / "crds" / "ray.io_rayservices.yaml"}
# the labels KubeRay gives every Ray pod besides its template's (labelPod in
# ray-operator/controllers/ray/common/pod.go, v1.7.0); ray.io/cluster is the RayCluster's name,
# which a RayService makes anew for each cluster it starts
KUBERAY_POD_LABELS = {
    "ray.io/is-ray-node": "yes",
    "ray.io/cluster": "occupancy-abcde",
    "app.kubernetes.io/name": "kuberay",
    "app.kubernetes.io/created-by": "kuberay-operator",
}


def _manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name not in NOT_KUBERNETES:
            out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


MANIFESTS = _manifests()
CORE = [(f, d) for f, d in MANIFESTS if (d["apiVersion"], d["kind"]) not in CUSTOM]


def _one(kind: str) -> dict:
    [found] = [d for _, d in MANIFESTS if d["kind"] == kind]
    return found


def _ray_pods(rayservice: dict) -> dict[str, dict]:
    """group name -> the pod template KubeRay makes that group's pods from."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]}
    pods |= {g["groupName"]: g["template"] for g in cluster["workerGroupSpecs"]}
    return pods


def _pod_labels(group: str, template: dict) -> dict:
    """The labels of a pod KubeRay starts from `template` (its own override the template's but
    for ray.io/node-type, ray.io/group and ray.io/cluster)."""
    kind = "head" if group == "head" else "worker"
    own = {"ray.io/node-type": kind, "ray.io/group": "headgroup" if kind == "head" else group}
    return KUBERAY_POD_LABELS | (template.get("metadata", {}).get("labels") or {}) | own


def _containers(obj: dict) -> list[dict]:
    """Every container of an object's pods, init containers too."""
    if obj["kind"] == "RayService":
        specs = [t["spec"] for t in _ray_pods(obj).values()]
    elif obj["kind"] in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
        specs = [obj["spec"]["template"]["spec"]]
    elif obj["kind"] == "Pod":
        specs = [obj["spec"]]
    else:
        return []
    return [c for s in specs for c in (*s.get("initContainers", []), *s["containers"])]


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- schemas ------------------------------------------------------------------------------------


def test_every_yaml_in_deploy_is_a_manifest_or_known_not_to_be_one():
    for name in NOT_KUBERNETES:
        docs = list(yaml.safe_load_all((DEPLOY / name).read_text()))
        assert docs and not any("apiVersion" in d or "kind" in d for d in docs if d), name
    assert MANIFESTS and all({"apiVersion", "kind", "metadata"} <= set(d) for _, d in MANIFESTS)
    names = [(d["kind"], d["metadata"]["name"]) for _, d in MANIFESTS]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize(
    "manifest",
    [d for _, d in CORE],
    ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in CORE],
)
def test_core_objects_match_kubernetes_schema(manifest):
    kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def _strict(schema: dict) -> dict:
    """A CRD's schema with unknown fields refused wherever the API server would prune them
    (kubectl apply's default field validation, Strict, refuses them instead)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    crd = yaml.safe_load(CUSTOM[(api_version, kind)].read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return jsonschema.Draft202012Validator(_strict(served["schema"]["openAPIV3Schema"]))


def test_the_rayservice_matches_kuberays_crd_and_its_pods_kubernetes_schema():
    rayservice = _one("RayService")
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _crd_validator("ray.io/v1", "RayService").iter_errors(rayservice)
    ]
    assert not errors, errors
    # the core objects the vendored CRD leaves out (deploy/crds/vendor.py)
    for group, template in _ray_pods(rayservice).items():
        pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": group}}
        kubernetes_validate.validate(pod | {"template": template}, KUBERNETES, strict=True)
    assert _kuberay_refusals(rayservice) == []


def _kuberay_refusals(rayservice: dict) -> list[str]:
    """What KubeRay's operator refuses beyond its schema, of what this RayService uses
    (ray-operator/controllers/ray/utils/validation.go, v1.7.0)."""
    refused = []
    cluster = rayservice["spec"]["rayClusterConfig"]
    if cluster.get("authOptions", {}).get("mode") == "token":
        version = tuple(int(n) for n in cluster["rayVersion"].split("."))
        if version < (2, 52, 0):
            refused.append("token authentication needs Ray 2.52 or later")
    upgrade = rayservice["spec"].get("upgradeStrategy", {}).get("type")
    if upgrade not in (None, "NewCluster", "NewClusterWithIncrementalUpgrade", "None"):
        refused.append(f"upgradeStrategy.type {upgrade} is not one KubeRay knows")
    return refused


def test_a_broken_manifest_is_refused():
    """The checks above can fail: a misspelt field and a bad value in each kind of object."""
    validator = _crd_validator("ray.io/v1", "RayService")
    misspelt = copy.deepcopy(_one("RayService"))
    misspelt["spec"]["rayClusterConfig"]["authOption"] = misspelt["spec"]["rayClusterConfig"].pop(
        "authOptions"
    )
    assert not validator.is_valid(misspelt)
    mode = copy.deepcopy(_one("RayService"))
    mode["spec"]["rayClusterConfig"]["authOptions"]["mode"] = "password"
    assert not validator.is_valid(mode)
    upgrade = copy.deepcopy(_one("RayService"))
    upgrade["spec"]["upgradeStrategy"]["type"] = "Sometimes"
    old_ray = copy.deepcopy(_one("RayService"))
    old_ray["spec"]["rayClusterConfig"]["rayVersion"] = "2.50.0"
    assert len(_kuberay_refusals(upgrade)) == len(_kuberay_refusals(old_ray)) == 1
    job = copy.deepcopy(_one("Job"))
    job["spec"]["backofLimit"] = job["spec"].pop("backoffLimit")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES, strict=True)
    service = copy.deepcopy(_one("Service"))
    service["spec"]["ports"][0]["port"] = "fifty thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES, strict=True)
    template = copy.deepcopy(_one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"])
    ray = template["template"]["spec"]["containers"][0]
    ray["volumeMount"] = ray.pop("volumeMounts")
    pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "head"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod | {"template": template["template"]}, KUBERNETES, True)


# -- what the objects rely on in each other ----------------------------------------------------


def test_the_ingest_service_reaches_every_pod_that_runs_ingest_handlers():
    rayservice, service = _one("RayService"), _one("Service")
    assert service["metadata"]["name"] == "occupancy-ingest"
    selector = service["spec"]["selector"]
    [port] = service["spec"]["ports"]
    assert port["port"] == port["targetPort"] == 50051
    pods = _ray_pods(rayservice)
    assert set(pods) == {"head", "workers"}
    for group, template in pods.items():
        assert _matches(selector, _pod_labels(group, template)), group
        [ray] = template["spec"]["containers"][:1]
        assert {"containerPort": 50051, "name": "grpc-ingest"} in ray["ports"], group
    # the RayService's own labels are not on its pods: a selector on them reaches nothing
    assert not any(k.startswith("ray.io/originated-from") for k in selector)
    # the supervisor's pod runs no handler
    job_pod = _one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not _matches(selector, job_pod)
    # every pod the Service sends devices to runs a handler from the start: handlers go
    # round-robin over the nodes (actors/ingest.py `start_handler`), one node per pod
    cluster = rayservice["spec"]["rayClusterConfig"]
    head_env = {e["name"]: e for e in pods["head"]["spec"]["containers"][0]["env"]}
    pod_count = 1 + sum(g["replicas"] for g in cluster["workerGroupSpecs"])
    assert int(head_env["OCC_INGEST_HANDLERS"]["value"]) >= pod_count


def test_the_network_policy_covers_the_ray_pods_and_admits_the_supervisor():
    rayservice, policy, job = _one("RayService"), _one("NetworkPolicy"), _one("Job")
    selected = policy["spec"]["podSelector"]["matchLabels"]
    for group, template in _ray_pods(rayservice).items():
        assert _matches(selected, _pod_labels(group, template)), group
    job_pod = job["spec"]["template"]["metadata"]["labels"]
    dashboard = [
        rule
        for rule in policy["spec"]["ingress"]
        if {"port": 8265, "protocol": "TCP"} in rule.get("ports", [])
        and any(
            _matches(p.get("podSelector", {}).get("matchLabels", {}), job_pod) for p in rule["from"]
        )
        and not any("namespaceSelector" in p for p in rule["from"])
    ]
    assert dashboard, "the supervisor cannot reach the job API"


def test_the_engines_driver_is_supervised():
    rayservice, job = _one("RayService"), _one("Job")
    for _, manifest in MANIFESTS:
        for container in _containers(manifest):
            assert "lifecycle" not in container, container["name"]  # a hook nothing restarts
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure") and spec["backoffLimit"] >= 1
    if pod["restartPolicy"] == "Never":  # only then may a failure be left uncounted
        ignored = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "Ignore"]
        conditions = [c["type"] for r in ignored for c in r.get("onPodConditions", [])]
        assert "DisruptionTarget" in conditions  # an evicted or drained pod is just replaced
    assert "completions" not in spec and "activeDeadlineSeconds" not in spec
    [container] = pod["containers"]
    command = container["command"]
    assert command[:2] == ["occupancy", "supervise"]
    address = command[command.index("--address") + 1]
    # KubeRay's head service of the RayService follows its current cluster
    assert address == f"http://{rayservice['metadata']['name']}-head-svc:8265"
    head = _ray_pods(rayservice)["head"]["spec"]["containers"][0]
    assert {"containerPort": 8265, "name": "dashboard"} in head["ports"]
    # it joins with the cluster's token, from the secret the RayService's auth names
    auth = rayservice["spec"]["rayClusterConfig"]["authOptions"]
    env = {e["name"]: e for e in container["env"]}
    assert auth["mode"] == "token" and env["RAY_AUTH_MODE"]["value"] == "token"
    token = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": auth["secretName"], "key": "auth_token"}


def test_the_driver_may_write_the_admin_keys_secret_and_nothing_else():
    rayservice, role, binding = _one("RayService"), _one("Role"), _one("RoleBinding")
    head = _ray_pods(rayservice)["head"]["spec"]
    env = {e["name"]: e.get("value") for e in head["containers"][0]["env"]}
    secret = _one("Secret")
    assert secret["metadata"]["name"] == env["OCC_ADMIN_KEY_SECRET"]
    assert "data" not in secret and "stringData" not in secret  # `up` writes it; never this file
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": head["serviceAccountName"]}]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret["metadata"]["name"]],
            "verbs": ["get", "patch"],
        }
    ]
    # the service account is the head's alone, where the driver runs
    for group, template in _ray_pods(rayservice).items():
        if group != "head":
            assert "serviceAccountName" not in template["spec"], group


# a command that would put a key or a secret in the container's output (a log) or in a file
SHOWS_A_KEY = [
    re.compile(r"\b(echo|printf|cat|printenv|env|tee)\b"),
    re.compile(r"\bset\s+-x\b"),
    re.compile(r"\$\{?(OCC_SECRET|OCC_API_KEY|RAY_AUTH_TOKEN)\b"),
    re.compile(r"admin\.key|auth_token"),
    re.compile(r">>?\s*\S+"),  # output sent to a file
]
# variables that hold a name or a path, not a secret
NAMES_NOT_SECRETS = {"OCC_TLS_KEY", "OCC_ADMIN_KEY_SECRET", "RAY_AUTH_MODE"}


def test_no_container_command_shows_a_key_and_no_manifest_holds_one():
    checked = 0
    for _, manifest in MANIFESTS:
        for container in _containers(manifest):
            words = " ".join([*container.get("command", []), *container.get("args", [])])
            for pattern in SHOWS_A_KEY:
                assert not pattern.search(words), (container["name"], words)
            for var in container.get("env", []):
                if var["name"] in NAMES_NOT_SECRETS:
                    continue
                if re.search(r"SECRET|TOKEN|PASSWORD|KEY|CLICKHOUSE_URL", var["name"]):
                    assert "secretKeyRef" in var.get("valueFrom", {}), var["name"]
                if "value" in var:
                    assert not re.search(r"://[^/@\s]*:[^/@\s]*@", var["value"]), var["name"]
            checked += 1
        if manifest["kind"] == "Secret":
            assert "data" not in manifest and "stringData" not in manifest
    assert checked == 3  # the Ray head and worker containers and the supervisor


def test_the_patterns_catch_what_they_are_for():
    for bad in [
        "/bin/sh -c occupancy up --no-api > /tmp/occupancy-up.log 2>&1 &",
        'sh -c "echo $RAY_AUTH_TOKEN"',
        "cat /home/ray/occupancy-data/admin.key",
        "sh -c 'set -x; curl -H \"Authorization: Bearer ${OCC_API_KEY}\"'",
    ]:
        assert any(p.search(bad) for p in SHOWS_A_KEY), bad
    assert not any(p.search("occupancy supervise --address http://x:8265") for p in SHOWS_A_KEY)
