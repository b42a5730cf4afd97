"""Unit tier: engine code only, so starting Ray here is an error."""

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError("unit tests run without Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)
