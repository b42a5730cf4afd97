"""The audit log in the running engine (real Ray, Redis, ClickHouse, gRPC and HTTP): requests
with a viewer's and an admin's key, one refused, gRPC calls and CLI writes reach the `audit`
table after a snapshot round, with key ids and pseudonyms, and no raw id or key anywhere."""

import json
import time
from urllib.parse import quote

import grpc
import pytest
import ray
import requests
from click.testing import CliRunner

from access.auth import key_hash, key_id
from clients.history import NAME as HISTORY
from engine.cells import cell_of, to_str
from engine.pseudonym import pseudonym_str
from observability.audit import STREAM
from occupancy.cli import main
from protos.occupancy.v1 import occupancy_pb2 as pb

pytestmark = pytest.mark.integration

PERSON = "+15145550199"  # raw ids: phone numbers
OTHER = "+15145550188"
HERE = (-54.802, -68.305)  # Ushuaia: no other test's pings, which they count, come here


def _get(live, path: str, key: str | None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(live.http + path, params=params, headers=headers, timeout=60)


def _audit(live, since: int) -> list[dict]:
    r = _get(live, "/v1/admin/audit", live.admin, **{"from": since, "limit": 10_000})
    assert r.status_code == 200, r.text
    return r.json()["entries"]


def _until(live, since: int, found, timeout_s: float = 90.0) -> list[dict]:
    """Snapshot rounds until the audit log holds what `found(entries)` looks for."""
    history = ray.get_actor(HISTORY, namespace=live.engine.topology.namespace)
    deadline = time.monotonic() + timeout_s
    while True:
        ray.get(history.snapshot.remote())
        entries = _audit(live, since)
        if found(entries):
            return entries
        seen = sorted({(e["source"], e["route"], e["key_id"], e["status"]) for e in entries})
        assert time.monotonic() < deadline, seen
        time.sleep(0.5)


def _one(entries: list[dict], **fields) -> dict:
    matches = [e for e in entries if all(e[k] == v for k, v in fields.items())]
    assert len(matches) == 1, (fields, matches)
    return matches[0]


def _has(entries: list[dict], **fields) -> bool:
    return any(all(e[k] == v for k, v in fields.items()) for e in entries)


def test_requests_reach_the_audit_log_with_key_ids_and_pseudonyms(live):
    now = int(time.time() * 1000)
    since = now - 10_000  # counts carry the start of their window (2 s here)
    # keys of this test alone: their records are this test's
    keys = {role: live.engine.create_key(role, "audit test") for role in ("viewer", "admin")}
    ingest_key = live.engine.create_key("ingest", "audit test")
    viewer, admin, ingest = (key_id(key_hash(k)) for k in (*keys.values(), ingest_key))
    ping = pb.Ping(device_id=PERSON, ts_ms=now - 2_000, lat=HERE[0], lng=HERE[1])
    # sent with this test's own key; the shared oracle, which other tests compare with, sees it
    live.oracle.ping(int(time.time() * 1000), ping.device_id, ping.ts_ms, ping.lat, ping.lng)
    ack = live.stub.SendPings(
        pb.SendPingsRequest(pings=[ping]),
        metadata=[("authorization", f"Bearer {ingest_key}")],
        timeout=30,
    )
    assert ack.accepted == 1
    ray.get(ray.get_actor(HISTORY, namespace=live.engine.topology.namespace).snapshot.remote())
    pseudonym = pseudonym_str(live.pseudonym(PERSON))
    path = f"/v1/history/path/{quote(PERSON, safe='')}"
    period = {"from": now - 60_000, "to": now + 60_000}

    assert _get(live, "/v1/top", keys["viewer"], n=3).status_code == 200
    assert _get(live, path, keys["viewer"], **period).status_code == 403  # admins only
    assert _get(live, path, keys["admin"], **period).status_code == 200
    assert _get(live, path, None, **period).status_code == 401
    assert _get(live, "/v1/top", "occ_admin_" + "n" * 32).status_code == 401
    with pytest.raises(grpc.RpcError) as refused:
        live.stub.SendPings(
            pb.SendPingsRequest(
                pings=[pb.Ping(device_id=PERSON, ts_ms=now, lat=HERE[0], lng=HERE[1])]
            ),
            metadata=[("authorization", "Bearer occ_ingest_" + "n" * 32)],
            timeout=30,
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    route = "/v1/history/path/{device_id}"
    grpc_route = "/occupancy.v1.IngestService/SendPings"

    def complete(entries):
        return (
            _has(entries, route=route, key_id=admin)
            and _has(entries, route=route, status=401)
            and _has(entries, route="/v1/top", status=401)
            and _has(entries, route=grpc_route, key_id=ingest, status=0)
            and _has(entries, route=grpc_route, key_id="", status=16)
        )

    entries = _until(live, since, complete)
    top = _one(entries, route="/v1/top", key_id=viewer)
    assert (top["role"], top["method"], top["status"], top["source"]) == (
        "viewer", "GET", 200, "http")  # fmt: skip
    assert top["params"] == {"n": "3"} and top["bytes_out"] > 0 and top["duration_ms"] > 0

    forbidden = _one(entries, route=route, key_id=viewer)
    assert (forbidden["role"], forbidden["status"]) == ("viewer", 403)
    assert forbidden["params"]["device_id"] == pseudonym  # from the id directory

    asked = _one(entries, route=route, key_id=admin)
    assert (asked["role"], asked["status"]) == ("admin", 200)
    assert asked["params"] == {
        "from": str(period["from"]), "to": str(period["to"]), "device_id": pseudonym
    }  # fmt: skip
    assert asked["rows"] == 1  # the one ping archived

    # refused: counted per window, route and reason, without a key id (other tests' too)
    assert _has(entries, route=route, status=401, key_id="", role="", params={"reason": "missing"})
    assert _has(entries, route="/v1/top", status=401, key_id="", params={"reason": "unknown"})
    sent = _one(entries, route=grpc_route, key_id=ingest)
    assert (sent["role"], sent["source"], sent["status"], sent["calls"]) == ("ingest", "grpc", 0, 1)
    assert sent["params"] == {"items": 1, "accepted": 1, "late": 0, "rejected": 0}
    assert _has(entries, route=grpc_route, key_id="", role="", status=16)

    # the CLI reads the same log; reading it was audited too
    out = CliRunner().invoke(
        main,
        ["audit", "--url", live.http, "--key", keys["admin"], "--from", str(since), "--json",
         "--route", "/v1/history/path", "-n", "50"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    from_cli = json.loads(out.output)["entries"]
    assert {(e["key_id"], e["status"]) for e in from_cli} >= {(viewer, 403), (admin, 200)}
    table = CliRunner().invoke(
        main, ["audit", "--url", live.http, "--key", keys["admin"], "--key-id", admin],
        env={"COLUMNS": "250"},  # rich's table: one line a record
    )  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "/v1/history/path/{device_id}" in table.output and pseudonym in table.output
    read = "/v1/admin/audit"
    _until(  # the read that gave `entries`, and the CLI's with this test's admin key
        live,
        since,
        lambda es: (
            _has(es, route=read, rows=len(entries))
            and _has(es, route=read, key_id=admin, role="admin", status=200)
        ),
    )

    _nothing_secret_in_the_log(live, [PERSON, *keys.values(), ingest_key, live.admin, live.key])


def test_every_history_route_records_its_rows(live):
    now = int(time.time() * 1000)
    admin = live.engine.create_key("admin", "audit test")
    kid = key_id(key_hash(admin))
    live.send([pb.Ping(device_id=OTHER, ts_ms=now - 1_000, lat=HERE[0], lng=HERE[1])])
    ray.get(ray.get_actor(HISTORY, namespace=live.engine.topology.namespace).snapshot.remote())
    cell = to_str(cell_of(*HERE, live.engine.topology.engine_spec().res))
    period = {"from": now - 60_000, "to": now + 60_000}
    asked = {
        "/v1/heatmap": {"bbox": "-68.31,-54.81,-68.30,-54.80", "at": now - 60_000},
        "/v1/top": {"n": 5, "at": now - 60_000},
        f"/v1/cells/{cell}": {"at": now - 60_000},
        "/v1/spaces": {"at": now - 60_000},
        "/v1/history/devices": {"bbox": "-68.31,-54.81,-68.30,-54.80", **period},
        "/v1/history/distance": {"device_id": OTHER, **period},
        "/v1/export": {"what": "pings", **period},
        f"/v1/users/{quote(OTHER, safe='')}/dwell": {"day": time.strftime("%Y-%m-%d")},
    }
    for path, params in asked.items():
        assert _get(live, path, admin, **params).status_code == 200, path
    routes = {
        "/v1/heatmap", "/v1/top", "/v1/cells/{cell}", "/v1/spaces", "/v1/history/devices",
        "/v1/history/distance", "/v1/export", "/v1/users/{device_id}/dwell",
    }  # fmt: skip
    entries = _until(live, now - 1_000, lambda es: routes <= {e["route"] for e in es
                                                              if e["key_id"] == kid})  # fmt: skip
    mine = {e["route"]: e for e in entries if e["key_id"] == kid and e["route"] in routes}
    assert {r: e["status"] for r, e in mine.items()} == dict.fromkeys(routes, 200)
    assert mine["/v1/history/devices"]["rows"] >= 1  # the devices found
    assert mine["/v1/export"]["rows"] == 0 and mine["/v1/export"]["bytes_out"] > 0
    pseudonym = pseudonym_str(live.pseudonym(OTHER))
    assert mine["/v1/history/distance"]["params"]["device_id"] == pseudonym
    assert mine["/v1/users/{device_id}/dwell"]["params"]["device_id"] == pseudonym
    _nothing_secret_in_the_log(live, [OTHER, admin])


def test_cli_writes_leave_records_with_the_os_user(live):
    since = int(time.time() * 1000) - 1_000
    now = int(time.time() * 1000)
    device = "+15145550177"
    live.send([pb.Ping(device_id=device, ts_ms=now - 1_000, lat=HERE[0], lng=HERE[1])])
    env = {
        "OCC_REDIS_URL": live.engine.redis_url,
        "OCC_DATA_DIR": str(live.engine.settings.data_dir),
    }
    runner = CliRunner()
    created = runner.invoke(
        main, ["keys", "create", "--role", "viewer", "--label", "audit"], env=env
    )
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[0]
    issued = runner.invoke(main, ["token", device, "--ttl", "1d"], env=env)
    assert issued.exit_code == 0, issued.output
    token = issued.output.strip().splitlines()[0]
    revoked = runner.invoke(main, ["keys", "revoke", key], env=env)  # the key itself
    assert revoked.exit_code == 0, revoked.output

    def complete(entries):
        return all(_has(entries, route=r) for r in ("keys create", "token issue", "keys revoke"))

    entries = _until(live, since, complete)
    made = _one(entries, route="keys create", source="cli")
    assert made["params"] == {"role": "viewer", "label": "audit", "id": key_id(key_hash(key))}
    assert "@" in made["os_user"] and made["status"] == 0 and made["key_id"] == ""
    token_record = _one(entries, route="token issue")
    assert token_record["params"]["device"] == pseudonym_str(live.pseudonym(device))
    assert token_record["params"]["token_id"].startswith("tok_")
    assert _one(entries, route="keys revoke")["params"] == {"id": key_id(key_hash(key))}
    _nothing_secret_in_the_log(live, [device, key, token])


def _nothing_secret_in_the_log(live, secrets: list[str]) -> None:
    """No raw id, key or token in the audit table, nor in the stream on its way there."""
    stored = json.dumps(_audit(live, 0))
    waiting = repr(live.engine.client().xrange(STREAM))
    for secret in secrets:
        for text in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1]):
            assert text not in stored, text
            assert text not in waiting, text
    assert "Bearer" not in stored
