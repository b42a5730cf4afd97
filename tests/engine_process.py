"""An engine as a user runs it: `occupancy up` in a subprocess, with its own data dir and ports."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


class EngineProcess:
    """`occupancy up` in a subprocess with its own data dir and ports, an admin key and a
    viewer and an ingest key made with the CLI."""

    def __init__(self, tmp_path: Path, *args: str, **settings: str):
        """`args`: more arguments of `occupancy up`; `settings`: OCC_* variables."""
        self.env, self.grpc_port, self.http_port = engine_env(tmp_path, **settings)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "occupancy.cli", "up", *args], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        lines = wait_ready(self.proc)
        self.output = lines  # the rest is read as it comes: a full pipe would stall the engine
        threading.Thread(target=lambda: lines.extend(self.proc.stdout), daemon=True).start()
        self.admin = (Path(self.env["OCC_DATA_DIR"]) / "admin.key").read_text().strip()
        self.keys = {"admin": self.admin}
        for role in ("viewer", "ingest"):
            made = subprocess.run(
                [sys.executable, "-m", "occupancy.cli", "keys", "create", "--role", role],
                cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            self.keys[role] = made.stdout.strip()

    def healthy(self) -> bool:
        r = requests.get(f"http://127.0.0.1:{self.http_port}/v1/health", timeout=30)
        return r.status_code == 200

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)


def wait_ready(proc: subprocess.Popen, timeout_s: float = 240) -> list[str]:
    """The lines `occupancy up` printed until it said it was ready (it ends with Ctrl-C)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        if "Ctrl-C" in line:
            return lines
    raise AssertionError("".join(lines))


def engine_env(tmp_path: Path, **extra: str) -> tuple[dict, int, int]:
    """The environment of an engine subprocess on free ports with its own data dir (and
    `extra` settings), and its gRPC and HTTP ports. It starts its own Ray unless `extra` has
    a RAY_ADDRESS to join."""
    port, http_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "OCC_DATA_DIR": str(tmp_path / "data"),
        "OCC_GRPC_PORT": str(port),
        "OCC_HTTP_PORT": str(http_port),
        "OCC_OSMAND_PORT": "0",  # a free one: engines of other test runs may hold 5055
        "COLUMNS": "200",
        "TERM": "dumb",
    }
    env.pop("RAY_ADDRESS", None)
    for name in [n for n in env if n.startswith("RAY_SERVE_")]:
        del env[name]  # an engine started in this process set them for itself
    env |= haproxy_ports() | extra
    return env, int(env["OCC_GRPC_PORT"]), int(env["OCC_HTTP_PORT"])


def haproxy_ports() -> dict[str, str]:
    """HAProxy stats and metrics ports of an engine's own: an engine of another test run on
    this machine may be starting at the same moment, and both would take Ray's defaults."""
    return {
        "RAY_SERVE_HAPROXY_STATS_PORT": str(_free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(_free_port()),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
