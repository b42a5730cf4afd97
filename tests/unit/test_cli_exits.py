"""The CLI's exit codes (0 done, 1 failed, 2 usage or bad settings), its failures in one line
(the traceback with --debug), --version and NO_COLOR."""

import socket
from importlib.metadata import version

from click.testing import CliRunner

from occupancy.cli import main
from tests.unit.test_settings import occupancy


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"occupancy {version('occupancy')}\n"


def test_a_failure_is_one_line_and_exit_1_and_debug_shows_the_traceback():
    redis_url = f"redis://127.0.0.1:{_closed_port()}/0"  # nothing listens there
    done = occupancy("keys", "list", OCC_REDIS_URL=redis_url)
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("occupancy: ConnectionError: ") and "--debug" in line, line
    assert "Traceback" not in done.stderr

    debug = occupancy("--debug", "keys", "list", OCC_REDIS_URL=redis_url)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr and "ConnectionError" in debug.stderr


def test_a_bad_setting_is_exit_2_for_every_command(tmp_path):
    done = occupancy("keys", "list", OCC_DATA_DIR=str(tmp_path), OCC_LIVE_MINUTES="0")
    assert done.returncode == 2
    assert done.stderr == "occupancy: OCC_LIVE_MINUTES=0: must be a whole number of at least 1\n"


def test_usage_errors_are_exit_2():
    runner = CliRunner()
    assert runner.invoke(main, ["no-such-command"]).exit_code == 2
    assert runner.invoke(main, ["estimate", "--devices", "x", "--interval", "1"]).exit_code == 2


def test_no_color_means_no_escape_codes():
    args = ("estimate", "--devices", "1000", "--interval", "1")
    coloured = occupancy(*args, FORCE_COLOR="1")  # as on a terminal
    assert coloured.returncode == 0 and "\x1b[" in coloured.stdout
    plain = occupancy(*args, FORCE_COLOR="1", NO_COLOR="1")
    assert plain.returncode == 0 and "Redis memory" in plain.stdout
    assert "\x1b" not in plain.stdout + plain.stderr
