"""Credentials on the command line: what a refused secret does to a command."""

import functools

import click

from actors.keyring import BadSecret


def exits_2_on_bad_secret(command):
    """A refused secret (placeholder, too short, missing file) is one line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BadSecret as exc:
            click.echo(f"occupancy: {exc}", err=True)
            raise SystemExit(2) from None

    return wrapper
