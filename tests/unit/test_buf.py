"""The gRPC contract passes buf's STANDARD lint (buf.yaml), and what it excuses is the deprecated
service alone: with its buf:lint:ignore comments disallowed, every finding is inside it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "protos" / "occupancy" / "v1" / "occupancy.proto"
DEPRECATED = "service Ingest {"


def _buf() -> str:
    """buf on PATH or beside this Python (`make test` puts it in .venv/bin); the test is
    skipped where it is missing, except in CI."""
    found = shutil.which("buf") or shutil.which("buf", path=str(Path(sys.executable).parent))
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("buf is missing; `make test` installs it from npm")
    pytest.skip("needs buf (`make buf` installs it from npm)")


def _lint(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_buf(), "lint", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_contract_is_lint_clean():
    done = _lint()
    assert done.returncode == 0, done.stdout + done.stderr


def _deprecated_lines() -> range:
    """The lines of the deprecated service's block, 1-based."""
    lines = PROTO.read_text().splitlines()
    start = lines.index(DEPRECATED)
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return range(start + 1, end + 2)


def test_only_the_deprecated_service_is_excused():
    config = yaml.safe_load((ROOT / "buf.yaml").read_text())
    assert config["lint"]["use"] == ["STANDARD"]
    assert not config["lint"].get("ignore") and not config["lint"].get("ignore_only")
    config["lint"]["disallow_comment_ignores"] = True
    done = _lint("--config", yaml.safe_dump(config), "--error-format", "json")
    findings = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode != 0 and findings, done.stdout + done.stderr
    inside = _deprecated_lines()
    for f in findings:
        assert f["path"] == PROTO.relative_to(ROOT).as_posix(), f
        assert f["start_line"] in inside and f["end_line"] in inside, f
    # its name; its three RPCs' request and response names, and IngestAck answering all three
    assert sorted(f["type"] for f in findings) == sorted(
        ["SERVICE_SUFFIX"]
        + ["RPC_REQUEST_STANDARD_NAME", "RPC_RESPONSE_STANDARD_NAME"] * 3
        + ["RPC_REQUEST_RESPONSE_UNIQUE"] * 3
    )
