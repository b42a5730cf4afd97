"""Settings are typed and range-checked before anything starts, every one but the secret is a
flag of `occupancy up`, and no repr shows the secret or a URL's password."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from engine.ring import HashRing
from engine.spec import EngineSpec
from occupancy import foreground
from occupancy.cli import main, up
from occupancy.runtime import topology_for
from occupancy.settings import MAX_RES, MIN_RES, BadSettings, Settings, bounds, env_name
from occupancy.settings_cli import ENV_ONLY, flag

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-secret-of-more-than-thirty-two-bytes-0123456789"


def occupancy(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, with `env` added to this environment (no other OCC_*)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OCC_")}
    return subprocess.run(
        [sys.executable, "-m", "occupancy.cli", *args],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "rule"),
    [
        ("OCC_H3_RES", "42", f"from {MIN_RES} to {MAX_RES}"),
        ("OCC_USER_SHARDS", "0", "at least 1"),
        ("OCC_GRPC_PORT", "70000", "from 0 to 65535"),
        ("OCC_DURABILITY", "sometimes", "one of everysec, always"),
        ("OCC_CELL_SHARDS", "two", "a whole number"),
    ],
)
def test_a_bad_setting_stops_up_in_one_line_with_exit_2_before_anything_starts(
    tmp_path, variable, value, rule
):
    data = tmp_path / "data"
    done = occupancy("up", OCC_DATA_DIR=str(data), **{variable: value})
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"occupancy: {variable}={value}: must be ") and rule in line, line
    assert not data.exists()  # no data dir, so no embedded Redis and nothing else either


def test_a_flag_out_of_range_is_a_usage_error():
    done = occupancy("up", "--h3-res", "42")
    assert done.returncode == 2 and "--h3-res" in done.stderr and "6<=x<=15" in done.stderr


def test_a_url_with_a_password_is_refused_as_a_flag():
    done = occupancy("up", "--redis-url", "redis://:hunter2hunter2@127.0.0.1:6379/0")
    assert done.returncode == 2 and "OCC_REDIS_URL" in done.stderr, done.stderr


def test_explicit_values_are_checked_and_named_by_field():
    with pytest.raises(BadSettings, match=r"^user_shards=0: must be a whole number of at least 1$"):
        Settings.from_env({}, user_shards=0)
    with pytest.raises(BadSettings, match="OCC_H3_RES=5"):
        Settings.from_env({"OCC_H3_RES": "5"})


def test_values_come_from_defaults_then_the_environment_then_overrides(tmp_path):
    env = {"OCC_DATA_DIR": str(tmp_path), "OCC_H3_RES": "10", "OCC_K_MIN": "", "OCC_API_KEY": "x"}
    s = Settings.from_env(env, user_shards=None, cell_shards=5)
    assert (s.data_dir, s.h3_res, s.k_min, s.user_shards, s.cell_shards) == (tmp_path, 10, 0, 2, 5)
    with pytest.raises(ValidationError):  # frozen
        s.h3_res = 11


def test_no_repr_shows_the_secret_or_a_password_in_a_url():
    s = Settings.from_env(
        {
            "OCC_SECRET": SECRET,
            "OCC_REDIS_URL": "redis://:redis-pass-1@10.0.0.5:6379/0",
            "OCC_CLICKHOUSE_URL": "http://occ:clickhouse-pass-2@10.0.0.6:8123/occupancy",
        }
    )
    assert s.secret.get_secret_value() == SECRET and "redis-pass-1" in s.redis_url
    for text in (repr(s), str(s), f"{s!r}"):
        for hidden in (SECRET, "redis-pass-1", "clickhouse-pass-2"):
            assert hidden not in text
        assert "redis://:***@10.0.0.5:6379/0" in text


def test_every_setting_but_the_secret_is_a_flag_of_up():
    opts = {o for p in up.params for o in p.opts}
    for name in Settings.model_fields:
        if name in ENV_ONLY:
            assert flag(name) not in opts, name  # flags show in `ps`
        else:
            assert flag(name) in opts, name
    assert ENV_ONLY == ("secret",)
    help_text = CliRunner().invoke(main, ["up", "--help"], terminal_width=200).output
    for name in Settings.model_fields:
        if name not in ENV_ONLY:
            assert env_name(name) in help_text, name


def test_flags_reach_the_engine_over_the_environment(monkeypatch, tmp_path):
    seen = []

    @contextmanager
    def capture(settings, console, serve_api=True):
        seen.append(settings)
        raise SystemExit(0)
        yield

    monkeypatch.setattr(foreground, "running_engine", capture)
    env = {"OCC_DATA_DIR": str(tmp_path), "OCC_H3_RES": "12", "OCC_USER_SHARDS": "3"}
    args = ["up", "--h3-res", "10", "--durability", "always", "--k-min", "5", "--ingest-nice", "4"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    [s] = seen
    assert (s.h3_res, s.durability, s.k_min, s.ingest_nice) == (10, "always", 5, 4)
    assert (s.user_shards, s.data_dir) == (3, tmp_path)


def test_the_ranges_are_the_engines_own():
    fields = Settings.model_fields
    assert bounds(fields["h3_res"]) == (MIN_RES, None, MAX_RES)
    EngineSpec(res=MIN_RES), EngineSpec(res=MAX_RES)
    for res in (MIN_RES - 1, MAX_RES + 1):
        with pytest.raises(ValueError):
            EngineSpec(res=res)
    with pytest.raises(ValueError):
        HashRing([])
    # the least of every number the settings accept makes an engine spec and a topology
    least = {}
    for name, field in fields.items():
        low, above, _ = bounds(field)
        if low is not None:
            least[name] = low
        elif above is not None:
            least[name] = above + 0.001
    s = Settings.from_env({}, **least)
    topology = topology_for(s, "redis://127.0.0.1:6379/0")
    assert EngineSpec.from_dict(topology.spec) == s.engine_spec()
    assert HashRing(topology.user_shards).nodes == ("user-0",)


def test_the_readme_names_every_setting():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    missing = [env_name(n) for n in Settings.model_fields if env_name(n) not in section]
    assert not missing
