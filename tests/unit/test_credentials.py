"""Secrets and the keys derived from them, without Redis: what is refused, what is separate,
and what reaches the actors."""

import dataclasses
import os
import pickle
import stat

import pytest
from click.testing import CliRunner

from actors import keyring
from actors.keyring import BadSecret, check_secret, hkdf
from actors.topology import Topology
from engine.pseudonym import pseudonym
from occupancy import local_files
from occupancy.settings import Settings

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


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


def test_pseudonyms_keep_the_secret_and_signing_keys_are_apart_from_it_and_each_other():
    # the pseudonym key is the secret itself: pseudonyms recorded so far stay valid
    assert keyring.pseudonym_key(SECRET) == SECRET
    assert pseudonym(keyring.pseudonym_key(SECRET), "phone-42") == pseudonym(SECRET, "phone-42")
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


@pytest.mark.parametrize("secret", ["change-me-to-a-long-random-secret", "too-short-for-a-secret"])
def test_up_refuses_a_placeholder_or_short_secret_with_one_line_and_exit_2(tmp_path, secret):
    from occupancy.cli import main

    env = {**os.environ, "OCC_DATA_DIR": str(tmp_path / "data"), "OCC_SECRET": secret}
    result = CliRunner().invoke(main, ["up"], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "OCC_SECRET" in lines[0], result.output
    assert not (tmp_path / "data" / "redis-data").exists()  # nothing was started
