"""The code's shape, checked: where the Ray boundary is crossed, how long files grow, a pure
engine (the packages' layers: test_layers.py). docs/design.md describes what these keep true."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [
    "engine",
    "clickhouse",
    "state",
    "access",
    "observability",
    "clients",
    "actors",
    "cluster",
    "serve_apps",
    "occupancy",
]
MAX_LINES = 450
# the clients, and the actor modules that call actors of their own (a ticker calling its own
# actor, a handler actor starting its server thread)
MAX_CALLING_FILES = 8


def product_files() -> list[Path]:
    return sorted(f for p in PRODUCT for f in (ROOT / p).rglob("*.py"))


def actor_method_calls(path: Path) -> int:
    """Calls of the form `<handle>.<method>.remote(...)`: an actor method called. Creating an
    actor (`Cls.remote(...)`, `Cls.options(...).remote(...)`) is not one."""
    n = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "remote":
            continue
        target = node.func.value
        if isinstance(target, ast.Attribute):  # handle.method.remote(...)
            n += 1
    return n


def test_actor_calls_sit_in_the_clients_and_the_actors_that_host_them():
    calls = {f.relative_to(ROOT).as_posix(): actor_method_calls(f) for f in product_files()}
    calling = {f: n for f, n in calls.items() if n}
    outside = [f for f in calling if not f.startswith(("clients/", "actors/"))]
    assert not outside, f"actor calls outside clients/ and actors/: {outside}"
    assert len(calling) <= MAX_CALLING_FILES, calling


def test_no_dispatch_by_method_name():
    for f in product_files():
        for node in ast.walk(ast.parse(f.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "remote"
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "getattr"
            ):
                raise AssertionError(f"{f}: getattr(handle, name).remote")


def test_no_file_is_too_long():
    long = {
        f.relative_to(ROOT).as_posix(): n
        for f in product_files()
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_engine_is_pure():
    banned = {"ray", "redis", "grpc", "clickhouse_connect", "chdb", "fastapi"}
    for f in (ROOT / "engine").rglob("*.py"):
        assert not imports_of(f) & banned, f
