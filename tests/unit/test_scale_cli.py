"""`occupancy scale` waits for the background scale with what the status says of it (the API
is replaced by a script of answers: no engine needed)."""

import io
import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from rich.console import Console

from occupancy import api_client, query_cli, scale_cli
from occupancy.cli import main

ACCEPTED = {
    "id": "job-1", "state": "running", "target_version": 4, "user_shards": 3, "cell_shards": 2,
    "ingest_handlers": None,
}  # fmt: skip
RESULT = {
    "version": 4, "changed": True, "user_shards": 3, "cell_shards": 2, "retired": [],
    "moved": {"user-0": {"user-2": 40}, "user-1": {"user-2": 35}}, "seconds": 2.5,
    "steps_s": {},
}  # fmt: skip


def _record(state="running", step=None, done=0, handed_off=0, moved=0, **extra) -> dict:
    record = {
        "id": "job-1", "state": state, "target_version": 4, "user_shards": 3, "cell_shards": 2,
        "ingest_handlers": None, "step": step, "done": done, "total": 8,
        "shards_handed_off": handed_off, "devices_moved": moved, "started_at": 1_700_000_000_000,
        "finished_at": None, "error": None, "result": None,
    }  # fmt: skip
    return record | extra


@pytest.fixture
def api(monkeypatch):
    """The answers the engine gives, in order: `posted` gets the scale's body, `statuses` is
    what each status poll answers."""

    script = SimpleNamespace(posted=[], statuses=[])

    def request(self, method, path, **kwargs):
        if method == "POST":
            assert path == "/v1/admin/scale"
            script.posted.append(kwargs["json"])
            return ACCEPTED
        assert path == "/v1/admin/status"
        return {"rebalance": script.statuses.pop(0)}

    monkeypatch.setattr(api_client.ApiClient, "request", request)
    monkeypatch.setattr(scale_cli, "POLL_S", 0)
    return script


def _run(*args):
    return CliRunner().invoke(main, ["scale", "--key", "k", *args])


def test_it_prints_each_step_then_what_was_done(api):
    api.statuses = [
        _record(step="start user shards", done=2),
        _record(step="start user shards", done=2),  # polled twice on the same step: one line
        _record(step="handoff", done=4, handed_off=1, moved=40),
        _record(step="handoff", done=4, handed_off=2, moved=75),
        _record(step="retire shards", done=7),
        _record(state="done", step="retire shards", done=8, result=RESULT),
    ]
    out = _run("--user-shards", "3", "--cell-shards", "2")
    assert out.exit_code == 0, out.output
    assert api.posted == [{"user_shards": 3, "cell_shards": 2, "ingest_handlers": None}]
    assert out.output.splitlines() == [
        "scaling to layout 4: 3 user and 2 cell shards",
        "[2/8] start user shards",
        "[4/8] handoff (1 shards, 40 devices)",
        "[4/8] handoff (2 shards, 75 devices)",
        "[7/8] retire shards",
        "layout 4: now 3 user and 2 cell shards",
        "  user-0: 40 devices to user-2",
        "  user-1: 35 devices to user-2",
        "  took 2.5 s",
    ]


def test_a_failed_scale_exits_non_zero_with_its_error(api):
    error = "RuntimeError: user-2 could not start"
    api.statuses = [_record(step="start user shards", done=2), _record("failed", error=error)]
    out = _run("--user-shards", "3")
    assert out.exit_code == 1
    assert f"the scale failed: {error}" in out.output
    assert "run the same command again" in out.output


def test_an_interrupted_scale_exits_non_zero_too(api):
    api.statuses = [_record("interrupted", error="the process running it stopped")]
    out = _run("--user-shards", "3")
    assert out.exit_code == 1 and "the scale interrupted" in out.output


def test_no_wait_prints_the_accepted_scale_and_polls_nothing(api):
    out = _run("--user-shards", "3", "--no-wait")
    assert out.exit_code == 0 and json.loads(out.output) == ACCEPTED


def test_json_prints_the_last_record_only(api):
    api.statuses = [_record(step="handoff", done=4), _record("done", done=8, result=RESULT)]
    out = _run("--user-shards", "3", "--json")
    assert out.exit_code == 0 and json.loads(out.output)["result"] == RESULT


def test_a_status_that_shows_another_scale_stops_the_wait(api):
    api.statuses = [_record(id="job-2")]
    out = _run("--user-shards", "3")
    assert out.exit_code == 1 and "another scale" in out.output


def test_the_status_line_says_how_the_last_scale_went():
    running = query_cli.scale_line(_record(step="handoff", done=4, handed_off=1, moved=40))
    assert "to layout 4: 3 user and 2 cell shards" in running
    assert running.endswith("running, step 5 of 8: handoff (1 shards, 40 devices)")
    failed = query_cli.scale_line(_record("failed", error="RuntimeError: boom"))
    assert failed.endswith("failed: RuntimeError: boom")


def test_on_a_terminal_a_bar_shows_the_steps_done_and_the_current_one():
    screen = io.StringIO()
    bar = scale_cli._Bar(Console(file=screen, force_terminal=True, width=100))
    bar(_record(step="start user shards", done=2))
    bar(_record(step="handoff", done=4, handed_off=2, moved=75))
    bar.close()
    assert "handoff (2 shards, 75 devices)" in screen.getvalue()
    assert "4/8" in screen.getvalue()
