"""The `occupancy` command line."""

import signal
import time

import click
from rich.console import Console

from occupancy.settings import Settings

console = Console()


def _settings(**overrides) -> Settings:
    return Settings.from_env(**overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Real-time occupancy engine: live and historical device counts per H3 cell and space.

    Settings come from OCC_* environment variables (OCC_DATA_DIR, OCC_REDIS_URL, OCC_GRPC_PORT,
    OCC_H3_RES, ...); RAY_ADDRESS joins an existing Ray cluster.
    """


@main.command()
@click.option("--grpc-port", type=int, default=None, help="Ingest port (OCC_GRPC_PORT, 50051).")
@click.option("--http-port", type=int, default=None, help="HTTP API port (OCC_HTTP_PORT, 8000).")
@click.option("--user-shards", type=int, default=None, help="User shard actors.")
@click.option("--cell-shards", type=int, default=None, help="Cell shard actors.")
def up(
    grpc_port: int | None, http_port: int | None, user_shards: int | None, cell_shards: int | None
) -> None:
    """Run the engine in the foreground: Ray, Redis, shard actors, gRPC ingest, HTTP API."""
    from occupancy import local_files
    from occupancy.runtime import Engine

    settings = _settings(
        grpc_port=grpc_port, http_port=http_port, user_shards=user_shards, cell_shards=cell_shards
    )
    engine = Engine(settings)
    with console.status("starting Ray, Redis and the shard actors…"):
        engine.start()
    try:
        admin = local_files.bootstrap_admin_key(settings, engine.client())
        console.print(f"[bold green]occupancy engine up[/] · data dir {settings.data_dir}")
        console.print(f"  gRPC ingest   127.0.0.1:{engine.grpc_port} (occupancy.v1.Ingest)")
        console.print(
            f"  HTTP API      http://127.0.0.1:{engine.http_port} (OpenAPI at /docs; "
            f"ingress {settings.http_ingress})"
        )
        console.print(f"  Redis         {engine.redis_url}")
        console.print(
            f"  shards        {len(engine.topology.user_shards)} user, "
            f"{len(engine.topology.cell_shards)} cell, "
            f"{len(engine.topology.space_shards)} space"
        )
        console.print(f"  admin key     {admin}")
        targets = settings.data_dir / "targets.json"
        console.print(f"  HTTP targets  {targets} (the replicas, for an external load balancer)")
        console.print("Ctrl-C stops it.")
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        last = 0.0
        while not stop:
            if time.monotonic() - last >= 5:
                engine.write_targets(targets)
                last = time.monotonic()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping…"):
            engine.stop()
        console.print("stopped")


@main.command()
@click.argument("device_id")
def token(device_id: str) -> None:
    """Print a device token, bound to DEVICE_ID, for `authorization: Bearer <token>`."""
    from actors.auth import device_token
    from occupancy import local_files

    click.echo(device_token(local_files.secret(_settings()), device_id))


@main.command()
@click.argument("device_id")
def forget(device_id: str) -> None:
    """Delete DEVICE_ID from the id directory: its history stays as anonymous aggregates."""
    from actors.id_directory import IdDirectory
    from occupancy import local_files
    from occupancy.local_files import RedisFor

    settings = _settings()
    with RedisFor(settings) as client:
        found = IdDirectory(client, local_files.secret(settings)).forget(device_id)
    click.echo("forgotten" if found else "not in the id directory")


@main.group()
def keys() -> None:
    """API keys (roles: viewer, admin, ingest)."""


@keys.command("create")
@click.option("--role", type=click.Choice(["viewer", "admin", "ingest"]), required=True)
@click.option("--label", default="", help="A note stored with the key.")
def keys_create(role: str, label: str) -> None:
    """Create a key and print it; only its hash is stored."""
    from actors.auth import KeyStore
    from occupancy.local_files import RedisFor

    with RedisFor(_settings()) as client:
        click.echo(KeyStore(client).create(role, label))


@keys.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke a key."""
    from actors.auth import KeyStore
    from occupancy.local_files import RedisFor

    with RedisFor(_settings()) as client:
        if not KeyStore(client).revoke(key):
            raise click.ClickException("no such key")
        click.echo("revoked")


@main.command()
@click.option("--devices", default=1000, show_default=True, help="Simulated devices.")
@click.option(
    "--interval", default=5.0, show_default=True, help="Seconds between a device's pings."
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--target", default=None, help="host:port of the ingest (default 127.0.0.1:OCC_GRPC_PORT)."
)
@click.option(
    "--key",
    envvar="OCC_INGEST_KEY",
    default=None,
    help="An ingest or admin key (default: the data dir's bootstrap admin key).",
)
@click.option("--door-rate", default=0.5, show_default=True, help="Door crossings per second.")
def simulate(
    devices: int,
    interval: float,
    duration: float | None,
    target: str | None,
    key: str | None,
    door_rate: float,
) -> None:
    """Stream a simulated fleet through the gRPC API: vehicles on city streets, pedestrians in
    a mall, door counters."""
    from occupancy.simulate_grpc import run

    settings = _settings()
    if key is None:
        path = settings.data_dir / "admin.key"
        if not path.exists():
            raise click.ClickException(
                "no --key given and no admin key in the data dir; "
                "run `occupancy up` first or pass --key"
            )
        key = path.read_text().strip()
    run(
        target or f"127.0.0.1:{settings.grpc_port}",
        key,
        devices,
        interval,
        duration,
        door_rate,
        console,
    )


@main.command()
@click.option("--devices", default=1000, show_default=True, help="Simulated devices.")
@click.option(
    "--interval", default=5.0, show_default=True, help="Seconds between a device's pings."
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def demo(devices: int, interval: float, duration: float | None) -> None:
    """Run the engine over a simulated city in this process and print live counts."""
    from occupancy.demo_local import run

    try:
        run(devices, interval, duration, console)
    except KeyboardInterrupt:
        pass


def _add_query_commands() -> None:
    from occupancy import query_cli

    for command in (query_cli.top, query_cli.heatmap, query_cli.dwell, query_cli.space):
        main.add_command(command)


_add_query_commands()


if __name__ == "__main__":
    main()
