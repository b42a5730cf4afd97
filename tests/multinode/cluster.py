"""A Ray cluster of real nodes on this one machine: `ray start --head` and `ray start --address`
for each worker, as an operator starts them on separate machines.

Each node has its own temp dir (its session, sockets and logs), its own ports and a custom
resource named after it. Nothing here touches Ray processes it did not start: a node's
processes are found by its temp dir (the raylet's command line names it) and the raylet's
descendants (every worker it forked), never by a process name, and `ray stop` (which stops every
Ray on the machine) is never run.

The test process itself never joins the cluster (another tier may have Ray initialized in this
process): Ray is reached through subprocesses and processes through /proc.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
OBJECT_STORE_BYTES = 100 * 2**20  # Ray's default is 30% of the machine's memory per node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    """One node: its name (also its custom resource) and temp dir."""

    name: str
    temp_dir: Path
    head: bool = False
    killed: bool = False
    log: list[str] = field(default_factory=list)

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node: those whose command line names its temp dir
        (raylet, GCS, agents, log monitor) and all their descendants (workers, HAProxy)."""
        marker = str(self.temp_dir)
        roots = []
        for p in psutil.process_iter(["cmdline"]):
            if any(marker in arg for arg in p.info["cmdline"] or ()):
                roots.append(p)
        found: dict[int, psutil.Process] = {}
        for p in roots:
            found[p.pid] = p
            try:
                for child in p.children(recursive=True):
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        return [p for p in found.values() if _alive(p)]

    def raylet(self) -> psutil.Process | None:
        for p in self.processes():
            try:
                if p.name() == "raylet":
                    return p
            except psutil.NoSuchProcess:
                pass
        return None

    def actors(self, kind: str) -> list[psutil.Process]:
        """This node's actor processes of one class (`UserShard`): Ray titles a worker
        `ray::<Class>` (with the method it runs after a dot)."""
        out = []
        for p in self.processes():
            try:
                title = " ".join(p.cmdline()[:1])
            except psutil.NoSuchProcess:
                continue
            if title == f"ray::{kind}" or title.startswith(f"ray::{kind}."):
                out.append(p)
        return out


class LocalRayCluster:
    """A head node and `workers` worker nodes, started with the `ray` CLI in `env` (which must
    hold what every node's Ray processes need: RAY_SERVE_* for the HTTP ingress, PYTHONPATH).

    Token authentication is on with a token of this cluster's own (`RAY_AUTH_TOKEN` in `env`,
    never written to ~/.ray): `self.env` is the environment a driver joining it needs, with
    `RAY_ADDRESS`."""

    def __init__(
        self,
        env: dict[str, str],
        workers: tuple[str, ...] = ("node_a", "node_b"),
        gcs_redis: str = "",
        gcs_redis_password: str = "",
        dashboard: bool = False,
    ):
        # short: a node's unix sockets live under it, and their paths may be at most 107 bytes
        self.root = Path(tempfile.mkdtemp(prefix="occ-mn-", dir="/tmp"))
        # host:port of a Redis for GCS fault tolerance: the head's GCS keeps its tables there,
        # so that a head started again on the same port takes the cluster back
        self.gcs_redis = gcs_redis
        self.gcs_redis_password = gcs_redis_password
        self.env = {
            **env,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)
        self.head = Node("head", self.root / "head", head=True)
        self.workers = [Node(name, self.root / name) for name in workers]
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # the head's dashboard and its job API (`occupancy supervise`), on loopback
        self.dashboard_port = free_port() if dashboard else None
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}" if dashboard else ""

    @property
    def nodes(self) -> list[Node]:
        return [self.head, *self.workers]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> "LocalRayCluster":
        try:
            self._start_head()
            for node in self.workers:
                self._start(node, ["--address", self.address])
            self.env["RAY_ADDRESS"] = self.address
            self.wait_alive(len(self.nodes))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_head(self) -> None:
        head = ["--head", "--port", str(self.port)]
        if self.dashboard_port:
            head += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1"]
            head += ["--dashboard-port", str(self.dashboard_port)]
        else:
            head += ["--include-dashboard", "false"]
        if self.gcs_redis_password:  # on the command line: this is a test's throwaway Redis
            head += ["--redis-password", self.gcs_redis_password]
        self._start(self.head, [*head, "--ray-client-server-port", str(free_port())])

    def restart_head(self) -> None:
        """`ray start --head` again, on the same port, after `kill("head")`: with GCS fault
        tolerance the worker nodes left reconnect to it.

        `ray start --head` refuses a port that the address file in its temp dir names while
        some process on the machine has that address on its command line: the worker nodes'
        here (on separate machines there would be none). The file goes first."""
        (self.head.temp_dir / "ray_current_cluster").unlink(missing_ok=True)
        self._start_head()
        self.head.killed = False

    def _start(self, node: Node, args: list[str]) -> None:
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            RAY, "start", *args,
            "--node-ip-address", "127.0.0.1",
            "--temp-dir", str(node.temp_dir),
            "--num-cpus", "1",
            "--resources", json.dumps({node.name: 1}),
            "--object-store-memory", str(OBJECT_STORE_BYTES),
            "--node-manager-port", str(free_port()),
            "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--min-worker-port", "0",
            "--max-worker-port", "0",
            "--disable-usage-stats",
        ]  # fmt: skip
        # Serve's HAProxy on each node binds a stats and a metrics port of its own: on one
        # machine the nodes' must differ (Ray's defaults would collide)
        env = self.env | {
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        }
        if node.head and self.gcs_redis:
            env |= {
                "RAY_REDIS_ADDRESS": self.gcs_redis,
                "RAY_external_storage_namespace": self.root.name,
            }
        elif self.gcs_redis:
            # a worker waits this long for a lost GCS before it gives up and exits (Ray's
            # default: 60 s); a generous bound, so that a head slow to start again on a busy
            # machine does not take the workers with it
            env["RAY_gcs_rpc_server_reconnect_timeout_s"] = "300"
        done = subprocess.run(
            cmd, env=env, cwd=node.temp_dir, capture_output=True, text=True, timeout=180
        )
        node.log.append(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"ray start ({node.name}) failed:\n{done.stdout}\n{done.stderr}")

    def ray_nodes(self) -> list[dict]:
        """`ray.nodes()` as a driver in a subprocess sees it: NodeID, Alive, Resources."""
        return json.loads(self.run_driver(_NODES))

    def wait_alive(self, count: int, timeout_s: float = 120) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = self.ray_nodes()
            if sum(n["Alive"] for n in nodes) == count:
                return nodes
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} nodes not alive: {nodes}")
            time.sleep(1)

    def run_driver(self, code: str, timeout_s: float = 120) -> str:
        """Runs `code` in a Python subprocess that joined the cluster (`ray.init()` done); its
        stdout."""
        prelude = (
            "import logging, ray\n"
            "ray.init(logging_level=logging.ERROR, log_to_driver=False)\n"
        )  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", prelude + code],
            env=self.env, cwd=self.root, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"driver failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def kill(self, name: str) -> list[int]:
        """SIGKILL every process of node `name` at once, as if its machine had gone: raylet,
        agents, workers (the actors on it). Returns the pids killed."""
        node = self.node(name)
        victims = node.processes()
        for p in victims:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=30)
        node.killed = True
        return [p.pid for p in victims]

    def memory_bytes(self) -> int:
        """Resident memory of every process of the cluster's nodes (proportional set size:
        pages shared between workers counted once)."""
        total = 0
        for node in self.nodes:
            for p in node.processes():
                try:
                    total += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return total

    def stop(self) -> None:
        """Workers first, then the head: SIGTERM, then SIGKILL whatever is left after 20 s;
        then the nodes' temp dirs (sessions and logs) go."""
        for node in [*self.workers, self.head]:
            procs = node.processes()
            for p in procs:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.NoSuchProcess:
                    pass
            _, left = psutil.wait_procs(procs, timeout=20)
            for p in left:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(left, timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


_NODES = """
import json
print(json.dumps([
    {"NodeID": n["NodeID"], "Alive": n["Alive"], "Resources": n.get("Resources", {})}
    for n in ray.nodes()
]))
"""


# the GCS declares a node dead after 5 failed health checks a second apart (Ray's defaults:
# 5 checks 3 s apart, about 15 s), so that a lost node's actors restart within seconds; what
# the runbook recommends for the head (docs/operations.md, "A lost worker node")
NODE_DEATH_DETECTION = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "5",
}


def cluster_env() -> dict[str, str]:
    """The environment every node starts in: this one, with the project first on the path
    (so that workers import the code under test)."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), path) if p)
    for name in [n for n in env if n.startswith("RAY_SERVE_")]:
        del env[name]  # an engine started in this process set them for itself
    return env | NODE_DEATH_DETECTION
