"""The packages' layers (docs/design.md, *Packages and layers*): each imports only packages of the
layers below it, never a sibling or a layer above, function-level imports included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS = [
    {"engine", "protos"},
    {"clickhouse", "state"},
    {"access", "observability", "clients"},
    {"actors"},
    {"cluster"},
    {"serve_apps"},
    {"occupancy"},
]
PACKAGES = set().union(*LAYERS)


def _imports(package: str) -> dict[str, set[str]]:
    """{imported product package: the files of `package` that import it}."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_package_imports_only_the_layers_below_it():
    wrong = {}
    for i, layer in enumerate(LAYERS):
        below = set().union(*LAYERS[:i])
        for package in layer:
            for imported, files in _imports(package).items():
                if imported not in below:
                    wrong[f"{package} -> {imported}"] = sorted(files)
    assert not wrong, wrong
