"""Vendors KubeRay's RayService CRD for the offline manifest tests (tests/unit/test_manifests.py):
version v1's schema, without the status, and with the core Kubernetes objects it embeds (pod
templates, Services) cut out, as those are validated against Kubernetes' own schema instead.

    python deploy/crds/vendor.py <kuberay checkout> v1.7.0 > deploy/crds/ray.io_rayservices.yaml
"""

import subprocess
import sys

import yaml

SOURCE = "ray-operator/config/crd/bases/ray.io_rayservices.yaml"
# where the RayService's schema embeds a core object: what it is (validated as that instead)
CORE = {
    ("spec", "serveService"): "core/v1 Service",
    ("spec", "rayClusterConfig", "headGroupSpec", "headService"): "core/v1 Service",
    ("spec", "rayClusterConfig", "headGroupSpec", "template"): "core/v1 PodTemplateSpec",
    ("spec", "rayClusterConfig", "workerGroupSpecs", "[]", "template"): "core/v1 PodTemplateSpec",
}


def _at(schema: dict, path: tuple[str, ...]) -> dict:
    for step in path[:-1]:
        schema = schema["items"] if step == "[]" else schema["properties"][step]
    return schema["items"] if path[-1] == "[]" else schema


def pruned(crd: dict) -> dict:
    [v1] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = v1["schema"]["openAPIV3Schema"]
    schema["properties"].pop("status")
    for path, kind in CORE.items():
        _at(schema, path)["properties"][path[-1]] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": f"A {kind}: cut out here, validated against Kubernetes' own schema.",
        }
    v1.pop("subresources", None)
    v1.pop("additionalPrinterColumns", None)
    crd["spec"]["versions"] = [v1]
    return crd


def main(checkout: str, ref: str) -> None:
    commit = subprocess.run(
        ["git", "-C", checkout, "rev-parse", f"{ref}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    text = subprocess.run(
        ["git", "-C", checkout, "show", f"{commit}:{SOURCE}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    crd = pruned(yaml.safe_load(text))
    print(f"# KubeRay {ref}'s RayService CRD: github.com/ray-project/kuberay,")
    print(f"# {SOURCE} at {commit}.")
    print("# Version v1's schema only: no status, and the core objects it embeds (pod templates,")
    print("# Services) cut out, as tests/unit/test_manifests.py validates those against")
    print("# Kubernetes' own schema. Made by deploy/crds/vendor.py; not for applying (KubeRay's")
    print("# Helm chart installs the real one).")
    print(yaml.safe_dump(crd, sort_keys=False, width=100), end="")


if __name__ == "__main__":
    main(*sys.argv[1:])
