"""A Kubernetes Secret of the pod's own namespace, read and patched with the pod's service
account over the in-cluster API: where `occupancy up` keeps the bootstrap admin key on
Kubernetes (OCC_ADMIN_KEY_SECRET), rather than in a file of a container that may go.

The Secret must exist (deploy/rayservice.yaml makes it empty) and the service account may only
get and patch it: a Role cannot grant `create` for one name. No error here says more than the
status code: an API answer may hold the Secret's data."""

import base64
import os
from pathlib import Path

import requests

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD = "key"  # the Secret's data key that holds the value
TIMEOUT_S = 30.0


class KubeSecretError(RuntimeError):
    """The Secret could not be read or written: which, and why, without its content."""


class KubeSecret:
    """One Secret's `FIELD`, as text. `read()` is None while the Secret holds no value."""

    def __init__(self, name: str, account: Path | None = None):
        self.name = name
        account = account or SERVICE_ACCOUNT
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if not host or not (account / "token").is_file():
            raise KubeSecretError(
                f"OCC_ADMIN_KEY_SECRET={name}: not in a Kubernetes pod with a service account "
                f"token ({account}/token)"
            )
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        namespace = (account / "namespace").read_text().strip()
        self.url = f"https://{host}:{port}/api/v1/namespaces/{namespace}/secrets/{name}"
        self.token = (account / "token").read_text().strip()
        self.ca = str(account / "ca.crt")

    def where(self) -> str:
        return (
            f"Kubernetes secret {self.name} (kubectl get secret {self.name} "
            f"-o jsonpath='{{.data.{FIELD}}}' | base64 -d)"
        )

    def read(self) -> str | None:
        r = self._request("GET", "get")
        value = (r.json().get("data") or {}).get(FIELD)
        return base64.b64decode(value).decode().strip() if value else None

    def write(self, value: str) -> None:
        encoded = base64.b64encode(value.encode()).decode()
        self._request(
            "PATCH",
            "patch",
            json={"data": {FIELD: encoded}},
            headers={"Content-Type": "application/merge-patch+json"},
        )

    def _request(self, method: str, verb: str, headers: dict | None = None, **kwargs):
        try:
            r = requests.request(
                method,
                self.url,
                headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
                verify=self.ca,
                timeout=TIMEOUT_S,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise KubeSecretError(
                f"the Kubernetes API did not answer ({verb} secret {self.name}): "
                f"{type(exc).__name__}"
            ) from None
        if r.status_code in (401, 403):
            raise KubeSecretError(
                f"the pod's service account may not {verb} secret {self.name} "
                f"({r.status_code}): see the Role in deploy/rayservice.yaml"
            )
        if r.status_code == 404:
            raise KubeSecretError(f"no secret {self.name} in this namespace: create it first")
        if r.status_code != 200:
            raise KubeSecretError(f"{verb} secret {self.name}: the API answered {r.status_code}")
        return r
