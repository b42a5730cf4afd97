"""The `occupancy` command line."""

from pathlib import Path

import click

from occupancy import terminal
from occupancy.credentials_cli import keys, token
from occupancy.settings import Settings
from occupancy.settings_cli import settings_options
from occupancy.supervisor import supervise

console = terminal.console(soft_wrap=True)  # URLs and keys stay on one line, copyable


def _settings(**overrides) -> Settings:
    return Settings.from_env(**overrides)


@click.group(cls=terminal.Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="occupancy", message="occupancy %(version)s")
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Real-time occupancy engine: live and historical device counts per H3 cell and space.

    \b
    Run:          up, demo, supervise
    Send:         simulate, replay
    Query:        top, heatmap, space, dwell, export
    Operate:      status, scale, deadletter, archive, audit
    Credentials:  keys, token, forget
    Plan:         estimate

    Settings come from OCC_* environment variables (OCC_DATA_DIR, OCC_REDIS_URL, OCC_GRPC_PORT,
    OCC_HTTP_PORT, OCC_H3_RES, ...; `occupancy up --help` lists them all, with their ranges);
    RAY_ADDRESS joins an existing Ray cluster. Query commands call the HTTP API with the data
    dir's admin key unless --key or OCC_API_KEY says otherwise.

    \b
    Exit codes: 0 done, 1 failed (one line on stderr; --debug shows the traceback),
    2 a bad flag or setting (nothing was started). NO_COLOR turns colours off.
    """
    ctx.meta[terminal.DEBUG] = debug


@main.command(short_help="Run the engine in the foreground: Ray, Redis, gRPC, HTTP.")
@click.option(
    "--api/--no-api",
    default=True,
    show_default=True,
    help="Serve the HTTP API too (--no-api where `serve deploy` or a RayService runs it).",
)
@click.option(
    "--tls-self-signed",
    is_flag=True,
    help="TLS on gRPC and HTTP with a CA and certificate made in <data dir>/tls (to try TLS; "
    "clients trust tls/ca.pem). --tls-cert and --tls-key name real ones.",
)
@settings_options
def up(api: bool, tls_self_signed: bool, **flags) -> None:
    """Run the engine in the foreground: Ray, Redis, shard actors, gRPC ingest, HTTP API,
    history snapshots. Prints the ports and a bootstrap admin key; Ctrl-C stops it.

    Each setting is a flag or its OCC_* variable (a flag wins); every value is checked before
    anything starts, and one out of range stops it with exit code 2. The secret comes only
    from OCC_SECRET or OCC_SECRET_FILE (flags show in `ps`), else it is generated in the data
    dir; a placeholder or a secret shorter than 32 bytes is refused (exit code 2)."""
    settings = _settings(**flags)  # checked before anything starts (or is imported)
    from occupancy.foreground import run_until_stopped, running_engine

    if tls_self_signed:
        from occupancy.tls import self_signed

        tls, ca = self_signed(settings.data_dir)
        made = {"tls_cert": tls.cert, "tls_key": tls.key, "tls_ca": str(ca)}
        settings = _settings(**flags | made)
    with running_engine(settings, console, serve_api=api) as (engine, _):
        console.print("Ctrl-C stops it.")
        run_until_stopped(engine, settings)


@main.command(short_help="Forget a device: its id, its live state, its raw history.")
@click.argument("device_id")
@click.option("--url", default=None, help="API base URL (default: local OCC_HTTP_PORT).")
@click.option("--key", envvar="OCC_API_KEY", default=None, help="Admin key (default: data dir's).")
def forget(device_id: str, url: str | None, key: str | None) -> None:
    """Forget DEVICE_ID (a raw id or a pseudonym) for good: the id directory drops it, live
    state drops it, its raw pings are deleted from history and its presence is kept under a
    key nothing links to it (counts of the past stay as they were). Its next ping starts a new
    pseudonym. With the engine not running, the id directory drops it now and the engine does
    the rest when it starts."""
    from urllib.parse import quote

    from occupancy.api_client import ApiClient, Unreachable

    settings = _settings()
    path = f"/v1/admin/devices/{quote(device_id, safe='')}"
    try:
        body = ApiClient(url, key, settings).delete(path)
    except Unreachable:
        if url is not None:
            raise
        click.echo(_forget_offline(settings, device_id))
        return
    waiting = [step for step in ("live", "history") if body[step] != "done"]
    click.echo("forgotten" + (f" ({' and '.join(waiting)} pending)" if waiting else ""))


def _forget_offline(settings: Settings, device_id: str) -> str:
    """The id directory's step now; the running engine's history actor does the rest."""
    from engine.pseudonym import new_pseudonym, pseudonym_str
    from observability.audit import recorded
    from occupancy.local_files import RedisFor
    from state import forgetting
    from state.id_directory import IdDirectory

    with RedisFor(settings) as client:
        key = IdDirectory(client).key_of(device_id)
        device = pseudonym_str(key) if key is not None else None
        with recorded(client, "forget", device=device):
            raw = IdDirectory(client).resolve(key) if key is not None else None
            if raw is None or forgetting.start(client, raw, new_pseudonym()) is None:
                raise click.ClickException("unknown_device: not in the id directory")
    return "forgotten in the id directory; the engine forgets the rest when it runs"


def fleet_options(f):
    """--devices, --interval, --rate, --duration and --door-rate, shared by simulate and demo."""
    f = click.option(
        "--door-rate", default=2.0, show_default=True, help="Door crossings per second."
    )(f)
    f = click.option(
        "--duration", type=float, default=None, help="Stop the fleet after this many seconds."
    )(f)
    f = click.option(
        "--rate",
        type=float,
        default=None,
        help="Pings per second across the fleet (sets the interval to devices / rate).",
    )(f)
    f = click.option(
        "--interval", default=5.0, show_default=True, help="Seconds between a device's pings."
    )(f)
    return click.option("--devices", default=2000, show_default=True, help="Simulated devices.")(f)


def _interval(devices: int, interval: float, rate: float | None) -> float:
    from occupancy.simulate_grpc import interval_for

    try:
        return interval_for(devices, interval, rate)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command(short_help="Stream a simulated fleet to a running engine.")
@fleet_options
@click.option(
    "--target", default=None, help="host:port of the ingest (default 127.0.0.1:OCC_GRPC_PORT)."
)
@click.option(
    "--key",
    envvar="OCC_INGEST_KEY",
    default=None,
    help="An ingest or admin key (default: the data dir's bootstrap admin key).",
)
@click.option(
    "--tls-ca",
    envvar="OCC_TLS_CA",
    default=None,
    help="TLS, trusting this CA file ('system': the system's CAs). Default: what the data "
    "dir's engine uses (TLS with its CA while it runs with TLS, else plaintext).",
)
def simulate(
    devices: int,
    interval: float,
    rate: float | None,
    duration: float | None,
    door_rate: float,
    target: str | None,
    key: str | None,
    tls_ca: str | None,
) -> None:
    """Stream a simulated fleet through the gRPC API of a running engine: cars on the street
    grids of four districts (red lights included), buses driving a recorded route, shoppers
    dwelling in the mall's sections, and door counters whose events sometimes arrive late and
    out of order."""
    from occupancy.simulate_grpc import run

    settings = _settings()
    if key is None and not (settings.data_dir / "admin.key").exists():
        raise click.ClickException(
            "no --key given and no admin key in the data dir; "
            "run `occupancy up` first or pass --key"
        )
    run(
        target or f"127.0.0.1:{settings.grpc_port}",
        key,  # None: the data dir's admin key
        devices,
        _interval(devices, interval, rate),
        duration,
        door_rate,
        console,
        tls_ca=None if tls_ca is None else (True if tls_ca == "system" else tls_ca),
        settings=settings,
    )


@main.command(short_help="Run the engine with a simulated city and the live page.")
@fleet_options
@click.option("--open", "open_browser", is_flag=True, help="Open the live page in a browser.")
def demo(
    devices: int,
    interval: float,
    rate: float | None,
    duration: float | None,
    door_rate: float,
    open_browser: bool,
) -> None:
    """Start the engine on embedded defaults with a demo city (districts, a mall with sections,
    a building with door counters), stream simulated fleets through gRPC, and print the URL of
    the live heatmap page. Data dir .occupancy/demo unless OCC_DATA_DIR is set; --duration
    stops the fleets, not the engine; Ctrl-C stops everything."""
    from occupancy.demo import run

    run(console, devices, _interval(devices, interval, rate), duration, door_rate, open_browser)


@main.command(short_help="Capacity plan: cores, nodes, shards, Redis, ClickHouse.")
@click.option("--devices", type=int, required=True, help="Devices in the fleet.")
@click.option("--interval", type=float, required=True, help="Seconds between a device's pings.")
@click.option(
    "--retention-days", type=int, default=60, show_default=True, help="Raw ping retention."
)
@click.option("--cores-per-node", type=int, default=8, show_default=True)
@click.option(
    "--batched",
    is_flag=True,
    help="Gateways send batches (SendPings) instead of one ping per message.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def estimate(
    devices: int,
    interval: float,
    retention_days: int,
    cores_per_node: int,
    batched: bool,
    as_json: bool,
) -> None:
    """A capacity plan: pings/s, cores, nodes, shards, Redis memory and ClickHouse storage,
    scaled from the rates and sizes measured by bench/ (see BENCHMARKS.md)."""
    import json
    from dataclasses import asdict

    from rich.table import Table

    from occupancy.capacity import plan

    try:
        p = plan(devices, interval, retention_days, cores_per_node, per_message=not batched)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if as_json:
        click.echo(json.dumps(asdict(p), indent=2))
        return
    how = "one ping per message" if not batched else "batched by gateways"
    table = Table(
        title=f"{devices:,} devices every {interval:g} s ({how}), raw kept {retention_days} days"
    )
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    table.add_column("from")
    for row in p.rows(cores_per_node):
        table.add_row(*row)
    console.print(table)


@main.command("export", short_help="Download history (pings, cells, dwell, ...) to a file.")
@click.option(
    "--what",
    type=click.Choice(["pings", "cells", "spaces", "dwell", "doors"]),
    default="pings",
    show_default=True,
)
@click.option("--from", "start", required=True, help="Start time (ISO 8601 or ms).")
@click.option("--to", "end", required=True, help="End time, exclusive.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "parquet", "arrow"]),
    default="parquet",
    show_default=True,
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--url", default=None, help="API base URL (default: local OCC_HTTP_PORT).")
@click.option("--key", envvar="OCC_API_KEY", default=None, help="An admin API key.")
def export_cmd(
    what: str, start: str, end: str, fmt: str, output: Path | None, url: str | None, key: str | None
) -> None:
    """Download history from the running engine's HTTP API into a file."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from occupancy.api_client import ApiClient

    api = ApiClient(url, key, _settings())
    output = output or Path(f"occupancy-{what}.{fmt}")
    params = {"what": what, "from": start, "to": end, "format": fmt}
    with api.download("/v1/export", params) as r:
        total = int(r.headers.get("content-length") or 0) or None
        with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                      console=console, transient=True) as bar:  # fmt: skip
            task = bar.add_task(f"exporting {what}", total=total)
            with output.open("wb") as f:
                for chunk in r.iter_content(1 << 16):
                    f.write(chunk)
                    bar.advance(task, len(chunk))
    click.echo(f"{output} ({output.stat().st_size:,} bytes)")


def _add_query_commands() -> None:
    from occupancy import query_cli, replay_cli, scale_cli

    shorts = {
        replay_cli.replay: "Run an archived raw file, or the lake's period, into history.",
        query_cli.top: "The busiest cells now (a table, or --json).",
        query_cli.heatmap: "Counts of every occupied cell in a bbox.",
        query_cli.dwell: "Where a device spent a UTC day (admin).",
        query_cli.space: "The count of a polygon or door space.",
        query_cli.series: "A space's or cell's counts per bucket of time (table or --json).",
        query_cli.status: "Shards and history snapshots, for operators (admin).",
        scale_cli.scale: "Change shard and ingest handler counts while ingest goes on.",
        query_cli.deadletter: "What history refused to store, newest first (admin).",
        query_cli.archive: "Pause or resume history's writes, or drill an outage (admin).",
        query_cli.audit: "Who asked what and when: the audit log (admin).",
    }
    for command, short in shorts.items():
        command.short_help = short
        main.add_command(command)


_add_query_commands()
main.add_command(keys)
main.add_command(token)
main.add_command(supervise)


if __name__ == "__main__":
    main()
