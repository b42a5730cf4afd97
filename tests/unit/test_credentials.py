"""Secrets, derived keys and device tokens, without Redis: what is refused, what is separate,
what a token carries and when it stops verifying."""

import dataclasses
import os
import pickle
import stat
import time

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from access import keyring, tokens
from access.keyring import BadSecret, check_secret, hkdf
from access.tokens import Claims, Refused, TokenVerifier, UnknownKid
from occupancy import local_files
from occupancy.credentials_cli import parse_ttl
from occupancy.settings import Settings
from state.topology import Topology

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
DAY_MS = 86_400_000
T0 = int(time.time() * 1000)  # revocations of tokens already expired are dropped on loading


def test_hkdf_matches_rfc_5869_test_case_3():
    okm = hkdf(b"\x0b" * 22, b"", 42)
    assert okm.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


@pytest.mark.parametrize(
    "value",
    [
        b"change-me-to-a-long-random-secret",  # what cluster.yaml and deploy/ used to ship
        b"CHANGE-ME-please-0123456789abcdef0123456789",
        b"replace-me-with-something-long-enough-really",
        b"short",
        b"x" * 31,
    ],
)
def test_placeholders_and_short_secrets_are_refused(value):
    with pytest.raises(BadSecret):
        check_secret(value, "OCC_SECRET")


def test_a_long_random_secret_is_taken_as_it_is():
    assert check_secret(b"a" * 32, "OCC_SECRET") == b"a" * 32
    assert check_secret(SECRET, "OCC_SECRET") == SECRET


def test_signing_keys_are_apart_from_the_secret_and_each_other():
    keys = {keyring.signing_key(SECRET, kid) for kid in ("aaaa0001", "aaaa0002")}
    keys.add(keyring.device_tag_key(SECRET))
    assert len(keys) == 3 and SECRET not in keys
    assert all(len(k) == 32 for k in keys)


def test_settings_and_topology_never_show_or_carry_the_secret(tmp_path):
    settings = Settings(data_dir=tmp_path, secret=SECRET.decode())
    assert SECRET.decode() not in repr(settings)
    assert "secret" not in {f.name for f in dataclasses.fields(Topology)}
    # what Ray ships to every actor at creation holds no secret
    topology = Topology(redis_url="redis://127.0.0.1:1/0")
    assert SECRET not in pickle.dumps(topology)
    generated = local_files.secret(Settings(data_dir=tmp_path))
    assert generated not in pickle.dumps(topology)


def test_the_generated_secret_is_private_and_actors_are_told_its_path_only(tmp_path):
    settings = Settings(data_dir=tmp_path)
    secret = local_files.secret(settings)
    path = tmp_path / "secret"
    assert len(secret) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_files.secret(settings) == secret  # kept: pseudonyms stay the same
    env = local_files.secret_for_actors(settings)
    assert env == {"OCC_SECRET_FILE": str(path.resolve())}
    assert secret.decode() not in repr(env)
    path.chmod(0o644)
    local_files.secret(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # OCC_SECRET reaches actors through the environment of `ray start`, not the runtime env
    assert local_files.secret_for_actors(Settings(data_dir=tmp_path, secret="s" * 40)) == {}


def test_bad_secret_files_and_settings_are_refused(tmp_path):
    short = tmp_path / "short"
    short.write_text("tiny\n")
    with pytest.raises(BadSecret, match="4 bytes"):
        local_files.secret(Settings(data_dir=tmp_path, secret_file=str(short)))
    with pytest.raises(BadSecret, match="cannot read"):
        local_files.secret(Settings(data_dir=tmp_path, secret_file=str(tmp_path / "none")))
    with pytest.raises(BadSecret, match="not both"):
        local_files.secret(Settings(data_dir=tmp_path, secret="a" * 40, secret_file=str(short)))
    with pytest.raises(BadSecret, match="placeholder"):
        local_files.secret(Settings(data_dir=tmp_path, secret="change-me-to-a-long-random-secret"))


def test_a_process_reads_its_secret_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(keyring, "_process_secret", [])
    monkeypatch.delenv("OCC_SECRET", raising=False)
    monkeypatch.delenv("OCC_SECRET_FILE", raising=False)
    with pytest.raises(BadSecret, match="no secret"):
        keyring.process_secret()
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    monkeypatch.setenv("OCC_SECRET_FILE", str(path))
    assert keyring.process_secret() == SECRET


def _claims(kid="k1", issued=T0, expires=T0 + 10 * DAY_MS, device="phone-42"):
    return Claims(device, kid, tokens.new_token_id(SECRET, expires), issued, expires)


def _verifier(kids=("k1",), retired=(), revoked=None, devices=None) -> TokenVerifier:
    v = TokenVerifier(SECRET)
    signing = {
        k.encode(): (b'{"created":1,"retired":%d}' % (5 if k in retired else 0)) for k in kids
    }
    v.load([signing, revoked or {}, devices or {}])
    return v


def test_a_token_carries_its_device_kid_id_and_expiry_and_verifies():
    claims = _claims()
    token = tokens.sign(SECRET, claims)
    assert token.startswith("dev2.") and len(token) < 300
    assert _verifier().verify(token, now_ms=T0 + 1) == claims
    parsed, _, _ = tokens.parse(token)
    assert parsed == claims


def test_a_token_stops_verifying_when_it_expires():
    token = tokens.sign(SECRET, _claims(expires=T0 + 5_000))
    v = _verifier()
    assert v.verify(token, now_ms=T0 + 4_999).device == "phone-42"
    with pytest.raises(Refused, match="expired"):
        v.verify(token, now_ms=T0 + 5_000)


def test_tampered_forged_and_old_format_tokens_are_refused():
    token = tokens.sign(SECRET, _claims())
    head, _, mac = token.split(".")
    v = _verifier()
    other = tokens.sign(SECRET, _claims(device="phone-43"))
    with pytest.raises(Refused, match="invalid"):  # someone else's claims under this mac
        v.verify(f"{head}.{other.split('.')[1]}.{mac}", now_ms=T0 + 1)
    with pytest.raises(Refused, match="invalid"):  # signed with another secret
        v.verify(tokens.sign(b"another secret" * 3, _claims()), now_ms=T0 + 1)
    with pytest.raises(Refused, match="invalid"):
        v.verify("dev2.bm9uc2Vuc2U.AAAA", now_ms=T0 + 1)
    with pytest.raises(Refused, match="earlier format"):
        v.verify("dev.cGhvbmUtNDI.AAAAAAAAAAAAAAAAAAAAAAAA", now_ms=T0 + 1)


def test_revoked_tokens_devices_and_retired_kids_stop_verifying():
    claims = _claims()
    token = tokens.sign(SECRET, claims)
    now = T0 + 1
    revoked = {claims.token_id.encode(): str(claims.expires_ms).encode()}
    with pytest.raises(Refused, match="revoked"):
        _verifier(revoked=revoked).verify(token, now_ms=now)
    tag = tokens.device_tag(keyring.device_tag_key(SECRET), "phone-42").encode()
    cutoff = {tag: str(T0).encode()}
    with pytest.raises(Refused, match="revoked"):  # issued before the device's revocation
        _verifier(devices=cutoff).verify(token, now_ms=now)
    later = tokens.sign(SECRET, _claims(issued=T0 + 1))
    assert _verifier(devices=cutoff).verify(later, now_ms=now).issued_ms == T0 + 1
    with pytest.raises(Refused, match="retired"):
        _verifier(kids=("k1", "k2"), retired=("k1",)).verify(token, now_ms=now)
    with pytest.raises(UnknownKid):  # signed right, under a kid not loaded yet (just rotated)
        _verifier(kids=("k0",)).verify(token, now_ms=now)


def test_revocations_are_only_ever_added():
    claims = _claims()
    token = tokens.sign(SECRET, claims)
    v = _verifier(revoked={claims.token_id.encode(): str(claims.expires_ms).encode()})
    v.load([{}, {}, {}])  # a Redis that lost its data, before its copy is written back
    with pytest.raises(Refused, match="revoked"):
        v.verify(token, now_ms=T0 + 1)


@given(
    st.one_of(
        st.text(max_size=300),
        st.builds(lambda a, b: f"dev2.{a}.{b}", st.text(max_size=80), st.text(max_size=60)),
        st.builds(
            lambda raw: "dev2." + tokens._b64(raw) + ".AAAA",
            st.binary(max_size=120) | st.just(b'{"sub":1,"kid":[],"jti":{},"iat":"x","exp":1.5}'),
        ),
    )
)
def test_whatever_a_client_sends_as_a_token_is_refused_cleanly(text):
    with pytest.raises(Refused):
        _verifier().verify(text, now_ms=T0)


def test_token_ids_carry_their_expiry_and_a_check_value():
    token_id = tokens.new_token_id(SECRET, 1_700_000_000_500)
    assert token_id.startswith("tok_") and len(token_id) == 36
    assert tokens.token_id_expiry(SECRET, token_id) == 1_700_000_001_000  # rounded up
    typo = token_id[:-1] + ("0" if token_id[-1] != "0" else "1")
    assert tokens.token_id_expiry(SECRET, typo) is None
    assert tokens.token_id_expiry(b"another secret" * 3, token_id) is None
    assert tokens.token_id_expiry(SECRET, "phone-42") is None


def test_ttls_read_with_units():
    assert parse_ttl("30d") == 30 * 86_400
    assert parse_ttl("12h") == 43_200
    assert parse_ttl("90") == 90
    assert parse_ttl("1y") == 365 * 86_400
    with pytest.raises(Exception, match="unit"):
        parse_ttl("thirty days")


@pytest.mark.parametrize("secret", ["change-me-to-a-long-random-secret", "too-short-for-a-secret"])
def test_up_refuses_a_placeholder_or_short_secret_with_one_line_and_exit_2(tmp_path, secret):
    from occupancy.cli import main

    env = {**os.environ, "OCC_DATA_DIR": str(tmp_path / "data"), "OCC_SECRET": secret}
    result = CliRunner().invoke(main, ["up"], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "OCC_SECRET" in lines[0], result.output
    assert not (tmp_path / "data" / "redis-data").exists()  # nothing was started
