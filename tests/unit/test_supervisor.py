"""`occupancy supervise`: one engine job live at a time, found rather than started twice, started
again when it ends, and the job API's answers read right (a real Ray dashboard: the multinode
tier's test_supervise.py)."""

import http.server
import json
import socket
import threading
from typing import ClassVar

import pytest
from click.testing import CliRunner

from occupancy.cli import main
from occupancy.supervisor import (
    ENTRYPOINT,
    FIRST_DELAY_S,
    MAX_DELAY_S,
    STABLE_S,
    AlreadySubmitted,
    EngineJob,
    RayJobs,
    Refused,
    Supervisor,
    Unreachable,
    auth_token,
    engine_jobs,
)


class JobTable:
    """The cluster's job table, as the job API shows it: jobs submitted by name, each ending
    when the test says. `others` submit between a supervisor's listing and its submission."""

    def __init__(self, *jobs: EngineJob):
        self.jobs = {j.submission_id: j for j in jobs}
        self.submitted: list[tuple[str, str]] = []
        self.others: list[str] = []
        self.down = 0  # requests that find the API unreachable before it answers again

    def _maybe_down(self) -> None:
        if self.down:
            self.down -= 1
            raise Unreachable("connection refused")

    def list(self) -> list[EngineJob]:
        self._maybe_down()
        return sorted(self.jobs.values(), key=lambda j: j.number)

    def status(self, submission_id: str) -> EngineJob:
        self._maybe_down()
        return self.jobs[submission_id]

    def submit(self, submission_id: str, entrypoint: str) -> None:
        self._maybe_down()
        for other in self.others:  # another supervisor's submission lands first
            self.jobs[other] = EngineJob(other, "RUNNING")
        self.others = []
        if submission_id in self.jobs:
            raise AlreadySubmitted(submission_id)
        self.submitted.append((submission_id, entrypoint))
        self.jobs[submission_id] = EngineJob(submission_id, "PENDING")

    def end(self, submission_id: str, status: str = "FAILED", message: str = "") -> None:
        self.jobs[submission_id] = EngineJob(submission_id, status, message)


class Clock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []
        self.at_sleep = lambda: None  # what happens in the world while the supervisor sleeps

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s
        self.at_sleep()


def supervisor(table: JobTable, clock: Clock | None = None) -> tuple[Supervisor, list[str]]:
    said: list[str] = []
    clock = clock or Clock()
    return Supervisor(table, said.append, clock=clock, sleep=clock.sleep), said


def test_no_engine_job_submits_the_first():
    table = JobTable()
    s, said = supervisor(table)
    job = s.ensure()
    assert table.submitted == [("occupancy-engine-1", ENTRYPOINT)]
    assert job.submission_id == "occupancy-engine-1" and job.live
    assert said == [f"submitted occupancy-engine-1: {ENTRYPOINT}"]


def test_a_running_engine_job_is_followed_not_started_twice():
    table = JobTable(
        EngineJob("occupancy-engine-1", "FAILED"), EngineJob("occupancy-engine-2", "RUNNING")
    )
    s, said = supervisor(table)
    assert s.ensure().submission_id == "occupancy-engine-2"
    assert table.submitted == []
    assert said == ["following occupancy-engine-2 (RUNNING)"]


def test_after_ended_jobs_the_next_number_is_submitted():
    table = JobTable(
        EngineJob("occupancy-engine-1", "FAILED"),
        EngineJob("occupancy-engine-7", "STOPPED"),
        EngineJob("occupancy-engine-3", "SUCCEEDED"),
    )
    s, _ = supervisor(table)
    assert s.ensure().submission_id == "occupancy-engine-8"
    assert [sid for sid, _ in table.submitted] == ["occupancy-engine-8"]


def test_a_supervisor_that_loses_the_race_follows_the_winners_job():
    table = JobTable(EngineJob("occupancy-engine-1", "FAILED"))
    table.others = ["occupancy-engine-2"]  # submitted by another between listing and submitting
    s, said = supervisor(table)
    assert s.ensure().submission_id == "occupancy-engine-2"
    assert table.submitted == []  # its own submission of the same name was refused
    assert said == ["following occupancy-engine-2 (RUNNING)"]


def test_an_ended_job_is_submitted_again_later_and_later_while_it_keeps_failing():
    table = JobTable()
    clock = Clock()
    s, said = supervisor(table, clock)

    def fail_the_live_one():  # each job fails at its first status check
        for job in table.jobs.values():
            if job.live:
                table.end(job.submission_id, "FAILED", "Job entrypoint command failed")

    clock.at_sleep = fail_the_live_one
    s.run(rounds=4)
    assert [sid for sid, _ in table.submitted] == [f"occupancy-engine-{i}" for i in range(1, 5)]
    restarts = [float(line.split(" in ")[1].split()[0]) for line in said if "again in" in line]
    assert restarts == [FIRST_DELAY_S, 2 * FIRST_DELAY_S, 4 * FIRST_DELAY_S, 8 * FIRST_DELAY_S]
    assert "ended FAILED" in said[1] and "Job entrypoint command failed" in said[1]


def test_the_wait_is_short_again_after_a_job_that_ran_for_a_while():
    table = JobTable()
    clock = Clock()
    s, said = supervisor(table, clock)
    s.delay_s = MAX_DELAY_S  # after a run of quick failures

    def fail_after_a_long_run():
        if clock.now >= STABLE_S:
            for job in table.jobs.values():
                if job.live:
                    table.end(job.submission_id, "FAILED", "the head was lost")

    clock.at_sleep = fail_after_a_long_run
    s.run(rounds=1)
    assert said[-1].endswith(f"starting the engine again in {FIRST_DELAY_S:.0f} s")


def test_an_unreachable_job_api_is_waited_for_and_said_once():
    table = JobTable(EngineJob("occupancy-engine-1", "RUNNING"))
    table.down = 3
    s, said = supervisor(table)
    assert s._retrying(s.ensure).submission_id == "occupancy-engine-1"
    assert [line for line in said if "unreachable" in line] == [
        "the job API is unreachable (connection refused); trying every 5 s"
    ]
    assert "the job API answers again" in said


def test_engine_jobs_are_told_from_other_jobs_by_their_names():
    listed = [
        {"submission_id": "occupancy-engine-2", "status": "RUNNING", "message": None},
        {"submission_id": None, "status": "SUCCEEDED", "type": "DRIVER"},  # a driver's own job
        {"submission_id": "raysubmit_abc", "status": "RUNNING"},
        {"submission_id": "occupancy-engine-10", "status": "FAILED", "message": "lost"},
        {"submission_id": "occupancy-engine-x", "status": "RUNNING"},
    ]
    assert engine_jobs(listed) == [
        EngineJob("occupancy-engine-2", "RUNNING", ""),
        EngineJob("occupancy-engine-10", "FAILED", "lost"),
    ]


# -- the job API's answers, from a server that gives them -------------------------------------


class _Api(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict] = {}  # (method, path) -> (status, body)
    seen: ClassVar[list] = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, text = type(self).answers.get((self.command, self.path), (404, "not found"))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(text.encode())

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    _Api.answers, _Api.seen = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Api
    server.shutdown()
    server.server_close()


def test_the_job_api_is_called_with_the_token_and_read(api):
    address, handler = api
    listed = [{"submission_id": "occupancy-engine-1", "status": "RUNNING", "message": ""}]
    handler.answers = {
        ("GET", "/api/jobs/"): (200, json.dumps(listed)),
        ("POST", "/api/jobs/"): (200, json.dumps({"submission_id": "occupancy-engine-2"})),
        ("GET", "/api/jobs/occupancy-engine-1"): (200, json.dumps(listed[0])),
    }
    jobs = RayJobs(address + "/", token="tok-123")
    assert jobs.list() == [EngineJob("occupancy-engine-1", "RUNNING")]
    assert jobs.status("occupancy-engine-1").live
    jobs.submit("occupancy-engine-2", ENTRYPOINT)
    assert handler.seen[-1] == (
        "POST",
        "/api/jobs/",
        "Bearer tok-123",
        {"entrypoint": ENTRYPOINT, "submission_id": "occupancy-engine-2"},
    )
    assert {auth for _, _, auth, _ in handler.seen} == {"Bearer tok-123"}
    # a job the cluster no longer knows (a head started anew without GCS fault tolerance)
    gone = jobs.status("occupancy-engine-9")
    assert gone.status == "FAILED" and not gone.live


@pytest.mark.parametrize(
    ("status", "text", "raised"),
    [
        (401, "Unauthorized: Missing authentication token", Refused),
        (403, "Forbidden: Invalid authentication token", Refused),
        (
            400,
            "ValueError: Job with submission_id occupancy-engine-1 already exists.",
            AlreadySubmitted,
        ),
        (500, "No available agent to submit job, please try again later.", Unreachable),
        (400, "bad request", Refused),
    ],
)
def test_the_job_api_refusals_are_told_apart(api, status, text, raised):
    address, handler = api
    handler.answers = {("POST", "/api/jobs/"): (status, text)}
    with pytest.raises(raised):
        RayJobs(address, token="t").submit("occupancy-engine-1", ENTRYPOINT)


def test_a_closed_port_is_unreachable_not_a_crash():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    with pytest.raises(Unreachable):
        RayJobs(f"http://127.0.0.1:{port}", token="").list()


def test_the_token_comes_from_the_environment_or_its_file(monkeypatch, tmp_path):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth_token() is None
    (tmp_path / "token").write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert auth_token() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_token() == "from-env"
    assert RayJobs("http://x").headers == {"Authorization": "Bearer from-env"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_token() is None and RayJobs("http://x").headers == {}


def test_supervise_says_a_refused_token_in_one_line_with_exit_code_1(api, monkeypatch):
    address, handler = api
    handler.answers = {("GET", "/api/jobs/"): (403, "Forbidden: Invalid authentication token")}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong")
    result = CliRunner().invoke(main, ["supervise", "--address", address])
    assert result.exit_code == 1, result.output
    assert "answered 403" in result.output and "RAY_AUTH_TOKEN" in result.output
    assert "wrong" not in result.output  # the token itself is never said
    bad = CliRunner().invoke(main, ["supervise", "--address", "head:8265"])
    assert bad.exit_code == 2 and "http://" in bad.output
