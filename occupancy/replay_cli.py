"""`occupancy replay`: an archived raw file, or a period of the lake, run through the engine
code into the history store (occupancy/replay.py)."""

from pathlib import Path

import click

from occupancy import terminal
from occupancy.settings import Settings

console = terminal.console(soft_wrap=True)


def _settings() -> Settings:
    return Settings.from_env()


@click.command()
@click.argument(
    "file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--kind",
    type=click.Choice(["auto", "pings", "doors"]),
    default="auto",
    show_default=True,
    help="What FILE holds (auto: door events if it has a `sensor` column).",
)
@click.option("--until", default=None, help="Engine time at the end (default: last receive).")
@click.option(
    "--lake", is_flag=True, help="Rebuild --from..--to from the lake (OCC_LAKE_URL), not a FILE."
)
@click.option("--from", "start", default=None, help="With --lake: start (ISO 8601 or ms).")
@click.option("--to", "end", default=None, help="With --lake: end, exclusive.")
def replay(
    file: Path | None, kind: str, until: str | None, lake: bool, start: str | None, end: str | None
) -> None:
    """Run an archived raw file (Parquet, CSV or Arrow: an `occupancy export` of pings or
    doors, or your own with device_id, ts, received, lat, lng) through the engine code and
    write the history it yields to the data dir's store (or OCC_CLICKHOUSE_URL).

    With --lake --from DATE --to DATE instead of FILE: rebuild the history of that period
    (event time) from the lake: its raw pings and door events are deleted from the store and
    the lake's written again, with the presence the engine code makes of them.

    With the embedded store, stop `occupancy up` on that data dir first: chDB lets one
    process at a time open it.
    """
    import json

    from clickhouse.backends import connect
    from clickhouse.store import HistoryStore
    from engine.timeutil import parse_time

    if lake and (file is not None or start is None or end is None):
        raise click.UsageError("--lake takes --from and --to, and no FILE")
    if not lake and (file is None or start is not None or end is not None):
        raise click.UsageError("replay takes a FILE, or --lake with --from and --to")
    settings = _settings()
    settings.check_embedded()  # it writes history itself, on the embedded defaults or servers
    try:
        stop = parse_time(until) if until else None
        period = (parse_time(start), parse_time(end)) if lake else None
        if period is not None and period[0] >= period[1]:
            raise ValueError("--from must be before --to")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    store = HistoryStore(
        connect(settings.clickhouse_url, settings.data_dir),
        settings.raw_retention_days,
        settings.aggregate_retention_days,
        settings.audit_retention_days,
    )
    try:
        if period is not None:
            result = _replay_lake(settings, store, period, stop)
        else:
            result = _replay_file(settings, store, file, kind, stop)
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.backend.close()
    click.echo(json.dumps(result))


def _replay_file(settings, store, file: Path, kind: str, until: int | None) -> dict:
    from rich.progress import Progress

    from occupancy.local_files import RedisFor
    from occupancy.replay import read_table, replay_doors, replay_pings
    from state import id_directory
    from state.metadata import Metadata

    table = read_table(file)
    if kind == "auto":
        kind = "doors" if "sensor" in table.column_names else "pings"
    if kind == "doors":
        return replay_doors(table, store, label=file.name)
    with RedisFor(settings) as client, Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"replaying {file.name}", total=table.num_rows)
        return replay_pings(
            table,
            store,
            settings.engine_spec(),
            lambda ids: id_directory.keys_for(client, ids),
            Metadata(client).polygon_spaces(),
            until=until,
            progress=lambda n: bar.advance(task, n),
            label=file.name,
        )


def _replay_lake(settings, store, period: tuple[int, int], until: int | None) -> dict:
    from rich.progress import Progress

    from clickhouse.lake import Lake
    from occupancy.local_files import RedisFor
    from occupancy.replay import replay_lake
    from state.metadata import Metadata

    with RedisFor(settings) as client, Progress(console=console, transient=True) as bar:
        task = bar.add_task("replaying the lake", total=None)
        return replay_lake(
            Lake(settings.lake(), settings.lake_retention_days),
            store,
            settings.engine_spec(),
            Metadata(client).polygon_spaces(),
            *period,
            until=until,
            progress=lambda n: bar.advance(task, n),
        )
