"""The alerting rules in deploy/alerts.yaml: valid, and unit-tested by promtool, every rule firing
in one case and silent in another (test_cluster_config checks they read metrics the engine
reports)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "alerts.test.yaml"


def _promtool() -> str:
    """promtool on PATH or beside this Python (`make test` puts it in .venv/bin); the test is
    skipped where it is missing, except in CI."""
    found = shutil.which("promtool") or shutil.which(
        "promtool", path=str(Path(sys.executable).parent)
    )
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is missing; `make test` installs it from Debian's prometheus package")
    pytest.skip("needs promtool (`make promtool` installs it from Debian's prometheus package)")


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_are_valid():
    _run(_promtool(), "check", "rules", str(RULES))


def test_every_rule_passes_its_unit_tests():
    _run(_promtool(), "test", "rules", str(RULE_TESTS))


def _alerts() -> list[dict]:
    return [rule for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]]


def test_every_rule_is_tested_firing_and_silent():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    for rule in _alerts():
        assert cases.get(rule["alert"]) == {True, False}, rule["alert"]
