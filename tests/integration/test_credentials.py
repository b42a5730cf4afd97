"""The lifecycle of keys and device tokens on a running engine: ids and labels, revocation that
reaches every handler and replica (and ends open streams), token expiry, signing-key rotation;
and secrets that reach the actors without being creation arguments.

Revocations are checked every `revocation.CHECK_EVERY_S`; the tests poll with generous
deadlines (others share the machine) and print the time a revocation took to show."""

import queue
import stat
import threading
import time

import grpc
import pytest
import ray
import requests
from ray import cloudpickle

from access import revocation
from access.auth import KeyStore
from access.tokens import SigningKeys, parse
from actors.history import HistoryConfig
from occupancy import local_files
from protos.occupancy.v1 import occupancy_pb2 as pb

pytestmark = pytest.mark.integration

SYDNEY = (-33.8688, 151.2093)
DEADLINE_S = 30.0


def _ping(device: str) -> pb.Ping:
    return pb.Ping(device_id=device, ts_ms=int(time.time() * 1000), lat=SYDNEY[0], lng=SYDNEY[1])


def _send(live, credential: str, device: str) -> grpc.StatusCode:
    """One ping of `device` sent with `credential`: OK (fed to the oracle) or the error code."""
    ping = _ping(device)
    try:
        ack = live.stub.SendPings(
            pb.SendPingsRequest(pings=[ping]),
            metadata=[("authorization", f"Bearer {credential}")],
            timeout=30,
        )
    except grpc.RpcError as exc:
        return exc.code()
    if not ack.rejections:
        live.oracle.ping(int(time.time() * 1000), ping.device_id, ping.ts_ms, ping.lat, ping.lng)
    return grpc.StatusCode.OK


def _until(check, what: str) -> float:
    """Seconds until `check()` holds (polled); fails after DEADLINE_S."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < DEADLINE_S, what
        time.sleep(0.02)
    return time.monotonic() - start


def _admin(live) -> dict:
    return {"Authorization": f"Bearer {live.admin}"}


def test_secrets_reach_actors_through_a_private_file_not_creation_arguments(live):
    settings = live.engine.settings
    secret = local_files.secret(settings)
    path = settings.data_dir / local_files.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the job's runtime env, which every actor and replica inherits, names the file only
    env = ray.get_runtime_context().runtime_env.get("env_vars", {})
    assert env == {"OCC_SECRET_FILE": str(path.resolve())}
    # what the actors are created with: the topology and history's configuration
    assert secret not in cloudpickle.dumps(live.engine.topology)
    assert b"secret" not in cloudpickle.dumps(HistoryConfig("", str(settings.data_dir)))
    # and yet the handlers verify what the driver signed, with keys they derived themselves
    assert _send(live, live.engine.device_token("file-secret-1"), "file-secret-1").name == "OK"


def test_keys_have_ids_and_labels_listed_and_revoked_by_id_over_http(live):
    key = live.engine.create_key("ingest", "gateway-list-test")
    url = f"{live.http}/v1/admin/keys"
    listed = requests.get(url, headers=_admin(live), timeout=30)
    assert listed.status_code == 200
    [row] = [k for k in listed.json()["keys"] if k["label"] == "gateway-list-test"]
    assert row["role"] == "ingest" and len(row["id"]) == 12 and row["created"] > 0
    assert key not in listed.text  # ids, never keys
    viewer = {"Authorization": f"Bearer {live.viewer}"}
    assert requests.get(url, headers=viewer, timeout=30).status_code == 403
    assert requests.delete(f"{url}/{row['id']}", headers=viewer, timeout=30).status_code == 403

    assert _send(live, key, "key-list-1") == grpc.StatusCode.OK

    def used() -> bool:
        rows = requests.get(url, headers=_admin(live), timeout=30).json()["keys"]
        return any(k["id"] == row["id"] and k["last_used"] for k in rows)

    _until(used, "the key's last use was not recorded")

    revoked = requests.delete(f"{url}/{row['id']}", headers=_admin(live), timeout=30)
    assert revoked.status_code == 200 and revoked.json() == {"revoked": "key", "id": row["id"]}
    took = _until(
        lambda: _send(live, key, "key-list-1") == grpc.StatusCode.UNAUTHENTICATED,
        "a revoked key kept sending",
    )
    print(f"revoked ingest key refused by ingest after {took:.2f} s")
    missing = requests.delete(f"{url}/{row['id']}", headers=_admin(live), timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_revoked_key_stops_working_on_the_api_within_the_check_period(live):
    assert revocation.CHECK_EVERY_S <= 1.0  # the mechanism: every process checks this often
    viewer = live.engine.create_key("viewer", "api-revoke-test")
    headers = {"Authorization": f"Bearer {viewer}"}
    assert requests.get(f"{live.http}/v1/spaces", headers=headers, timeout=30).status_code == 200
    KeyStore(live.engine.client()).revoke(viewer)  # by the key itself, as before
    took = _until(
        lambda: (
            requests.get(f"{live.http}/v1/spaces", headers=headers, timeout=30).status_code == 401
        ),
        "a revoked viewer key kept reading",
    )
    print(f"revoked viewer key refused by the API after {took:.2f} s")


def _open_stream(live, credential: str, device: str):
    """A StreamPings call with one ping acked; (the call, its request queue)."""
    requests_ = queue.Queue()

    def messages():
        while (item := requests_.get()) is not None:
            yield item

    call = live.stub.StreamPings(
        messages(), metadata=[("authorization", f"Bearer {credential}")], timeout=120
    )
    ping = _ping(device)
    requests_.put(ping)
    ack = next(call)
    assert ack.accepted == 1, ack
    live.oracle.ping(int(time.time() * 1000), ping.device_id, ping.ts_ms, ping.lat, ping.lng)
    return call, requests_


def _ended_after(call, revoke) -> tuple[grpc.StatusCode, str, float]:
    """Revoke, then wait for the open stream to end: (code, details, seconds after revoke)."""
    ended: list = []

    def watch():
        try:
            for _ in call:
                pass
            ended.append((grpc.StatusCode.OK, ""))
        except grpc.RpcError as exc:
            ended.append((exc.code(), exc.details()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    revoke()
    watcher.join(DEADLINE_S)
    took = time.monotonic() - start
    assert ended, "the stream stayed open after its credential was revoked"
    return (*ended[0], took)


def test_a_revoked_keys_open_stream_ends_with_unauthenticated(live):
    key = live.engine.create_key("ingest", "stream-revoke-test")
    call, requests_ = _open_stream(live, key, "stream-revoke-1")
    [row] = [k for k in KeyStore(live.engine.client()).list() if k["label"] == "stream-revoke-test"]
    try:
        code, details, took = _ended_after(
            call,
            lambda: requests.delete(
                f"{live.http}/v1/admin/keys/{row['id']}", headers=_admin(live), timeout=30
            ).raise_for_status(),
        )
    finally:
        requests_.put(None)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details, (code, details)
    print(f"open stream of a revoked key ended {took:.2f} s after the DELETE")


def test_a_revoked_device_tokens_open_stream_ends_too(live):
    token = live.engine.device_token("stream-token-1")
    call, requests_ = _open_stream(live, token, "stream-token-1")
    token_id = parse(token)[0].token_id
    try:
        code, details, took = _ended_after(
            call,
            lambda: requests.delete(
                f"{live.http}/v1/admin/tokens/{token_id}", headers=_admin(live), timeout=30
            ).raise_for_status(),
        )
    finally:
        requests_.put(None)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "revoked" in details, (code, details)
    print(f"open stream of a revoked device token ended {took:.2f} s after the DELETE")


def test_device_tokens_expire(live):
    token = live.engine.device_token("expiring-1", ttl_s=1)
    expires_ms = parse(token)[0].expires_ms
    while time.time() * 1000 <= expires_ms:
        time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as err:
        live.stub.SendPings(
            pb.SendPingsRequest(pings=[_ping("expiring-1")]),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=30,
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in err.value.details()


def test_device_tokens_are_revoked_by_id_or_for_a_whole_device(live):
    first = live.engine.device_token("revoke-dev-1")
    second = live.engine.device_token("revoke-dev-1")
    first_id = parse(first)[0].token_id
    url = f"{live.http}/v1/admin/tokens"
    r = requests.delete(f"{url}/{first_id}", headers=_admin(live), timeout=30)
    assert r.status_code == 200 and r.json() == {"revoked": "token", "id": first_id}
    _until(
        lambda: _send(live, first, "revoke-dev-1") == grpc.StatusCode.UNAUTHENTICATED,
        "a revoked token kept sending",
    )
    assert _send(live, second, "revoke-dev-1") == grpc.StatusCode.OK  # only that token

    typo = first_id[:-1] + ("0" if first_id[-1] != "0" else "1")
    bad = requests.delete(f"{url}/{typo}", headers=_admin(live), timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_token_id"

    r = requests.delete(f"{url}/revoke-dev-1", headers=_admin(live), timeout=30)
    assert r.json() == {"revoked": "device", "id": "revoke-dev-1"}
    _until(
        lambda: _send(live, second, "revoke-dev-1") == grpc.StatusCode.UNAUTHENTICATED,
        "a token of a revoked device kept sending",
    )
    time.sleep(0.01)  # a token issued after the revocation (a later millisecond) is good
    assert _send(live, live.engine.device_token("revoke-dev-1"), "revoke-dev-1").name == "OK"


def test_rotation_keeps_old_tokens_until_their_key_is_retired(live):
    signing = SigningKeys(live.engine.client())
    old = live.engine.device_token("rotate-1")
    old_kid = parse(old)[0].kid
    new_kid = signing.rotate()
    new = live.engine.device_token("rotate-1")
    assert parse(new)[0].kid == new_kid != old_kid
    # the handlers take a kid they have not loaded yet at once: no wait after a rotation
    assert _send(live, new, "rotate-1") == grpc.StatusCode.OK
    assert _send(live, old, "rotate-1") == grpc.StatusCode.OK  # verifies until it expires
    with pytest.raises(ValueError, match="rotate"):
        signing.retire(new_kid)
    signing.retire(old_kid)
    _until(
        lambda: _send(live, old, "rotate-1") == grpc.StatusCode.UNAUTHENTICATED,
        "a token signed with a retired key kept sending",
    )
    assert _send(live, new, "rotate-1") == grpc.StatusCode.OK
