"""The `occupancy` command line."""

import contextlib

import click
from rich.console import Console


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Real-time occupancy engine: live and historical device counts per H3 cell and space."""


@main.command()
@click.option("--devices", default=1000, show_default=True, help="Simulated devices.")
@click.option(
    "--interval", default=5.0, show_default=True, help="Seconds between a device's pings."
)
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def demo(devices: int, interval: float, duration: float | None) -> None:
    """Run the engine over a simulated city in this process and print live counts."""
    from occupancy.demo_local import run

    with contextlib.suppress(KeyboardInterrupt):
        run(devices, interval, duration, Console())


if __name__ == "__main__":
    main()
