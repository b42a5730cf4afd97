"""How the CLI meets a terminal: consoles that honour NO_COLOR, and failures as one line with an
exit code (0 ok, 1 failure, 2 usage or bad settings); `--debug` shows the traceback."""

import os
import traceback

import click
from rich.console import Console

from access.keyring import BadSecret
from clickhouse.backends import NoChdb
from occupancy.settings import BadSettings
from occupancy.tls import BadTls
from state.redis_server import NoRedisServer

DEBUG = "occupancy.debug"  # ctx.meta key: set by `occupancy --debug`
# settings that cannot work are refused before anything starts, like a bad flag; the embedded
# Redis or ClickHouse asked for without the `embedded` extra is one
BAD_SETTINGS = (BadSettings, BadSecret, BadTls, NoRedisServer, NoChdb)


def console(**kwargs) -> Console:
    """A rich console; with NO_COLOR set (and not empty) it prints no escape codes at all (rich
    itself would still print bold and italics)."""
    no_color = os.environ.get("NO_COLOR", "") != ""
    return Console(color_system=None if no_color else "auto", **kwargs)


class Failure(click.ClickException):
    """A command that failed: `occupancy: <what>` on stderr and exit code 1."""

    def show(self, file=None) -> None:
        click.echo(f"occupancy: {self.format_message()}", err=True)


class BadUsage(Failure):
    """Settings (or a secret, TLS files, an extra not installed) that cannot work: exit code 2,
    as for a bad flag."""

    exit_code = 2


class Group(click.Group):
    """A command group whose commands fail in one line: click's own errors as click shows them,
    bad settings with exit code 2, anything else with its type and message and exit code 1.
    With `--debug` the traceback comes too."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException:
            if ctx.meta.get(DEBUG):
                traceback.print_exc()
            raise
        except BAD_SETTINGS as exc:
            if ctx.meta.get(DEBUG):
                traceback.print_exc()
            raise BadUsage(one_line(exc)) from exc
        except Exception as exc:
            if ctx.meta.get(DEBUG):
                raise
            what = f"{type(exc).__name__}: {one_line(exc)}"
            raise Failure(f"{what} (--debug shows the traceback)") from exc


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
