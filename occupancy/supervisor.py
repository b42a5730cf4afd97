"""`occupancy supervise`: keeps the engine's driver (`occupancy up --no-api`) running on a Ray
cluster as a Ray job, from outside the cluster (a Kubernetes Job).

The driver runs on the cluster's head under Ray's job supervisor, so the engine does not depend
on the supervising process: when that goes, the engine runs on, and the next one follows the
same job. When the job ends (the driver failed, or the head it ran on was lost), the supervisor
submits it again. Engine jobs are named `occupancy-engine-<n>`: a supervisor submits the next
`n`, so two supervisors racing submit one job between them (the second submission of a name is
refused, and its supervisor follows the job that won), and `occupancy up` itself refuses to
start while an engine runs (occupancy/runtime.py)."""

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import requests

from occupancy.terminal import Failure

ENTRYPOINT = "occupancy up --no-api"
PREFIX = "occupancy-engine-"
LIVE = ("PENDING", "RUNNING")
POLL_S = 5.0  # how often the job's status is read
FIRST_DELAY_S = 5.0  # before submitting again after a job that ran for a while
MAX_DELAY_S = 300.0  # the longest wait between submissions of a job that keeps failing
STABLE_S = 600.0  # a job that ran this long had started fine: the next waits FIRST_DELAY_S
REQUEST_TIMEOUT_S = 30.0


class Unreachable(Exception):
    """The cluster's job API did not answer (the head is starting again, say): retried."""


class Refused(Exception):
    """The job API refused the supervisor's requests (its token, most often): not retried."""


class AlreadySubmitted(Exception):
    """A job of that name exists: another supervisor submitted it first."""


@dataclass(frozen=True)
class EngineJob:
    """An engine job as the job API reports it."""

    submission_id: str
    status: str
    message: str = ""

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def number(self) -> int:
        return int(self.submission_id.removeprefix(PREFIX))


def engine_jobs(details: list[dict]) -> list[EngineJob]:
    """The engine's jobs among every job the API lists, in the order they were submitted."""
    jobs = [
        EngineJob(d["submission_id"], d["status"], d.get("message") or "")
        for d in details
        if re.fullmatch(rf"{PREFIX}\d+", d.get("submission_id") or "")
    ]
    return sorted(jobs, key=lambda j: j.number)


def next_id(jobs: list[EngineJob]) -> str:
    return f"{PREFIX}{max((j.number for j in jobs), default=0) + 1}"


class RayJobs:
    """The Ray job API of a cluster's dashboard (`http://<head>:8265`), over its REST routes with
    a timeout on every request. The cluster's token comes from RAY_AUTH_TOKEN (or the file
    RAY_AUTH_TOKEN_PATH names) when Ray's token authentication is on."""

    def __init__(self, address: str, token: str | None = None):
        self.address = address.rstrip("/")
        token = token if token is not None else auth_token()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def list(self) -> list[EngineJob]:
        r = self._request("GET", "/api/jobs/")
        if r.status_code == 404:
            raise Refused(f"{self.address} has no job API (not a Ray dashboard?)")
        return engine_jobs(r.json())

    def status(self, submission_id: str) -> EngineJob:
        r = self._request("GET", f"/api/jobs/{submission_id}")
        if r.status_code == 404:  # a cluster started anew (without GCS fault tolerance)
            return EngineJob(submission_id, "FAILED", "the cluster no longer knows it")
        [job] = engine_jobs([r.json()])
        return job

    def submit(self, submission_id: str, entrypoint: str) -> None:
        body = {"entrypoint": entrypoint, "submission_id": submission_id}
        if self._request("POST", "/api/jobs/", json=body).status_code == 404:
            raise Refused(f"{self.address} has no job API (not a Ray dashboard?)")

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            r = requests.request(
                method,
                self.address + path,
                headers=self.headers,
                timeout=REQUEST_TIMEOUT_S,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise Unreachable(f"{self.address}: {type(exc).__name__}") from exc
        if r.status_code in (401, 403):
            raise Refused(
                f"the job API at {self.address} answered {r.status_code}: set RAY_AUTH_TOKEN to "
                "the cluster's token (the Secret its authOptions name)"
            )
        if r.status_code in (200, 404):
            return r
        if "already exists" in r.text:
            raise AlreadySubmitted(kwargs.get("json", {}).get("submission_id", path))
        if r.status_code >= 500:  # the job agent not ready yet, say
            raise Unreachable(f"{self.address}{path} answered {r.status_code}")
        raise Refused(f"the job API at {self.address} answered {r.status_code}: {r.text[:200]}")


def auth_token() -> str | None:
    """The cluster's token as Ray's own clients find it: RAY_AUTH_TOKEN, else the file named by
    RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; None without any (or with auth off)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return path.read_text().strip() if path.is_file() else None


class Supervisor:
    """Keeps one engine job live: `ensure` finds or submits it, `follow` waits for its end,
    `run` does both forever, waiting longer before each submission while the job keeps failing
    soon after it starts. `jobs` is a RayJobs (or anything with its three methods)."""

    def __init__(
        self,
        jobs,
        say: Callable[[str], None],
        entrypoint: str = ENTRYPOINT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.jobs = jobs
        self.say = say
        self.entrypoint = entrypoint
        self.clock = clock
        self.sleep = sleep
        self.delay_s = FIRST_DELAY_S
        self._unreachable = False

    def ensure(self) -> EngineJob:
        """The live engine job: the one that runs (the newest, should there be several), else
        one submitted now."""
        while True:
            jobs = self.jobs.list()
            live = [j for j in jobs if j.live]
            if live:
                self.say(f"following {live[-1].submission_id} ({live[-1].status})")
                return live[-1]
            submission_id = next_id(jobs)
            try:
                self.jobs.submit(submission_id, self.entrypoint)
            except AlreadySubmitted:
                continue  # another supervisor's: follow it
            self.say(f"submitted {submission_id}: {self.entrypoint}")
            return self.jobs.status(submission_id)

    def follow(self, job: EngineJob) -> EngineJob:
        """Polls the job until it ends; its last status."""
        submission_id = job.submission_id
        while job.live:
            self.sleep(POLL_S)
            job = self._retrying(lambda: self.jobs.status(submission_id))
        return job

    def run(self, rounds: int | None = None) -> None:
        """Ensure, follow, and after the job's end wait and start again; `rounds` jobs followed
        (None: forever)."""
        done = 0
        while rounds is None or done < rounds:
            job = self._retrying(self.ensure)
            started = self.clock()
            ended = self.follow(job)
            ran_s = self.clock() - started
            self.delay_s = FIRST_DELAY_S if ran_s >= STABLE_S else self.delay_s
            detail = f": {ended.message}" if ended.message else ""
            self.say(
                f"{ended.submission_id} ended {ended.status} after {ran_s:.0f} s{detail}; "
                f"starting the engine again in {self.delay_s:.0f} s"
            )
            self.sleep(self.delay_s)
            self.delay_s = min(MAX_DELAY_S, self.delay_s * 2)
            done += 1

    def _retrying(self, call):
        """`call()`, again every POLL_S while the job API is unreachable (said once)."""
        while True:
            try:
                answer = call()
            except Unreachable as exc:
                if not self._unreachable:
                    self.say(f"the job API is unreachable ({exc}); trying every {POLL_S:.0f} s")
                self._unreachable = True
                self.sleep(POLL_S)
                continue
            if self._unreachable:
                self.say("the job API answers again")
                self._unreachable = False
            return answer


@click.command(short_help="Keep the engine running as a Ray job of a cluster (Kubernetes).")
@click.option(
    "--address",
    envvar="RAY_API_SERVER_ADDRESS",
    required=True,
    help="The cluster's job API: its dashboard, http://<head>:8265 [RAY_API_SERVER_ADDRESS].",
)
@click.option(
    "--entrypoint",
    default=ENTRYPOINT,
    show_default=True,
    help="The engine's driver, run on the head with the head's environment.",
)
def supervise(address: str, entrypoint: str) -> None:
    """Start the engine's driver as a Ray job of the cluster at ADDRESS and start it again
    whenever that job ends; runs until stopped. A job already running is followed, not started
    twice, so this may be stopped and started again (or run twice) at any time; the engine does
    not depend on it. The cluster's token comes from RAY_AUTH_TOKEN. Exit code 1 when the job
    API refuses the token; an unreachable cluster is waited for."""
    if not address.startswith(("http://", "https://")):
        raise click.BadParameter(
            "must be the dashboard's http:// or https:// URL", param_hint="--address"
        )

    def say(message: str) -> None:
        click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", err=True)

    try:
        Supervisor(RayJobs(address), say, entrypoint).run()
    except Refused as exc:
        raise Failure(str(exc)) from exc
