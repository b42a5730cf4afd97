"""`occupancy scale`: ask for new shard and handler counts, then wait for the engine to get there.

The API accepts a scale at once (202) and runs it in the background; this polls
`GET /v1/admin/status` (its `rebalance` record) and shows the steps as they go: a progress bar
on a terminal, one line per step otherwise (logs, CI). It exits 0 once the scale is done and
non-zero with the engine's error when it failed or its API replica went away mid-way.
"""

import json
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from occupancy import terminal
from occupancy.api_client import ApiClient
from occupancy.query_cli import api_options, scale_step
from occupancy.settings import Settings

POLL_S = 1.0
UNREACHABLE_POLLS = 30  # status answers that may fail in a row (a replica restarting)


@click.command()
@click.option("--user-shards", type=click.IntRange(1, 64), default=None, help="User shards.")
@click.option("--cell-shards", type=click.IntRange(1, 64), default=None, help="Cell shards.")
@click.option(
    "--ingest-handlers", type=click.IntRange(1, 64), default=None, help="gRPC ingest handlers."
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Print the accepted scale and return; `occupancy status` shows how it goes.",
)
@api_options
def scale(user_shards, cell_shards, ingest_handlers, no_wait, url, key, as_json) -> None:
    """Change shard counts while ingest goes on (admin).

    Devices move to their new user shards over the hash ring and cell counts to their new cell
    shards; nothing is lost or counted twice. Batches sent meanwhile wait for the new layout
    (about a second for 100k devices on a 2-core machine) and are applied under it. The engine
    accepts the scale at once and runs it in the background; this waits for it, showing its
    steps. An interrupted or failed rebalance is finished by running the same command again.
    """
    if user_shards is None and cell_shards is None and ingest_handlers is None:
        raise click.UsageError("give --user-shards, --cell-shards or --ingest-handlers")
    body = {"user_shards": user_shards, "cell_shards": cell_shards}
    body["ingest_handlers"] = ingest_handlers
    api = ApiClient(url, key, Settings.from_env())
    accepted = api.post("/v1/admin/scale", body, timeout=120)  # pricing asks every node
    if no_wait:
        click.echo(json.dumps(accepted, indent=2))
        return
    if not as_json:
        click.echo(_target(accepted))
    console = terminal.console()
    show = _Quiet() if as_json else (_Bar(console) if console.is_terminal else _Lines())
    try:
        record = wait(api, accepted["id"], show)
    finally:
        show.close()
    if as_json:
        click.echo(json.dumps(record, indent=2))
    if record["state"] != "done":
        raise click.ClickException(
            f"the scale {record['state']}: {record['error']}\n"
            "run the same command again to finish it (`occupancy status` shows what is pending)"
        )
    if not as_json:
        _summary(record["result"])


def wait(api: ApiClient, job_id: str, show) -> dict:
    """Polls the status until the scale `job_id` is no longer running; `show(record)` on each
    answer. Its last record."""
    misses = 0
    while True:
        try:
            record = api.get("/v1/admin/status")["rebalance"]
        except click.ClickException:
            misses += 1  # unreachable, restarting, or not JSON (a proxy's error page)
            if misses >= UNREACHABLE_POLLS:
                raise
        else:
            misses = 0
            if record is None or record["id"] != job_id:
                raise click.ClickException(
                    "the status shows another scale (started meanwhile?); see `occupancy status`"
                )
            show(record)
            if record["state"] != "running":
                return record
        time.sleep(POLL_S)


def _target(accepted: dict) -> str:
    text = (
        f"scaling to layout {accepted['target_version']}: {accepted['user_shards']} user and "
        f"{accepted['cell_shards']} cell shards"
    )
    if accepted.get("ingest_handlers") is not None:
        text += f", {accepted['ingest_handlers']} ingest handlers"
    return text


class _Quiet:
    """Nothing while it runs (--json prints the last record)."""

    def __call__(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines:
    """One line per step (and per user shard handing off), for output that is not a terminal."""

    def __init__(self):
        self._last = None

    def __call__(self, record: dict) -> None:
        seen = (record["step"], record["done"], record["shards_handed_off"])
        if record["state"] == "running" and seen != self._last:
            click.echo(f"[{record['done']}/{record['total']}] {scale_step(record)}")
        self._last = seen

    def close(self) -> None:
        pass


class _Bar:
    """A progress bar of steps, with the current one's name, redrawn on the terminal."""

    def __init__(self, console: Console):
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        )  # fmt: skip
        self._progress.start()
        self._task = None

    def __call__(self, record: dict) -> None:
        if self._task is None:
            self._task = self._progress.add_task("", total=record["total"])
        text = scale_step(record) if record["state"] == "running" else record["state"]
        self._progress.update(self._task, completed=record["done"], description=text)

    def close(self) -> None:
        self._progress.stop()


def _summary(out: dict) -> None:
    """What was done, as the synchronous scale used to print it."""
    if "version" in out:
        what = "now" if out["changed"] else "already"
        click.echo(
            f"layout {out['version']}: {what} {out['user_shards']} user and "
            f"{out['cell_shards']} cell shards"
        )
        for shard, moved in out.get("moved", {}).items():
            click.echo(f"  {shard}: " + ", ".join(f"{n} devices to {t}" for t, n in moved.items()))
        if out.get("changed"):
            click.echo(f"  took {out['seconds']} s")
    if "ingest_handlers" in out:
        click.echo(f"{out['ingest_handlers']} ingest handlers on port {out['port']}")
