"""Shared test settings: hypothesis profiles, the artifacts directory."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.engine_process import haproxy_ports

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# engines started in this process (the integration tier's) get HAProxy ports of their own
for _name, _port in haproxy_ports().items():
    os.environ.setdefault(_name, _port)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def artifacts(request) -> Path:
    """A directory kept after the run for what a test saves to look at (screenshots):
    test-output/<test name>/ at the repository root."""
    path = Path(__file__).resolve().parents[1] / "test-output" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
