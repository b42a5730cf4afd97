"""`occupancy keys ...` and `occupancy token ...`: API keys, device tokens and signing keys,
written to the deployment's Redis directly (OCC_REDIS_URL, or the data dir's embedded one).
Each command that writes leaves a record in the audit log (source "cli", the OS user)."""

import json
import re
import time

import click
from rich.table import Table

from occupancy import terminal
from occupancy.settings import Settings

console = terminal.console(soft_wrap=True)
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}


def parse_ttl(text: str) -> float:
    """Seconds in `30d`, `12h`, `90m`, `3600s`, `2w`, `1y` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*", text.lower())
    if not match:
        raise click.BadParameter(f"{text!r}: a number with a unit (s, m, h, d, w, y), e.g. 30d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _minute(ms: int | None) -> str:
    """A table's time: UTC to the minute (the table's title says UTC)."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) if ms else "-"


def _redis(settings: Settings):
    from occupancy.local_files import RedisFor

    return RedisFor(settings)


def _pseudonym(client, device_id: str) -> str | None:
    """The device's pseudonym for an audit record (None if the id directory lacks it)."""
    from engine.pseudonym import pseudonym_str
    from state.id_directory import IdDirectory

    key = IdDirectory(client).key_of(device_id)
    return pseudonym_str(key) if key is not None else None


# -- API keys and signing keys ---------------------------------------------------------------------


@click.group(short_help="API keys (viewer, admin, ingest) and device-token signing keys.")
def keys() -> None:
    """API keys (roles: viewer, admin, ingest): create, list, revoke; and the keys that sign
    device tokens: rotate, list, retire. A revocation takes effect on every ingest handler and
    API replica within a second and ends the key's open ingest streams."""


@keys.command("create", short_help="Create a key and print it.")
@click.option("--role", type=click.Choice(["viewer", "admin", "ingest"]), required=True)
@click.option("--label", default="", help="A note stored with the key (who or what uses it).")
def keys_create(role: str, label: str) -> None:
    """Create a key and print it (its id goes to stderr); only its hash is stored."""
    from access.auth import KeyStore, key_hash, key_id
    from observability.audit import recorded

    with (
        _redis(Settings.from_env()) as client,
        recorded(client, "keys create", role=role, label=label) as params,
    ):
        try:
            key = KeyStore(client).create(role, label)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        params["id"] = key_id(key_hash(key))
    click.echo(key)
    click.echo(f"id {key_id(key_hash(key))}", err=True)


@keys.command("list", short_help="Every key: id, role, label, created, last used.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (times in ms since the epoch).")
def keys_list(as_json: bool) -> None:
    """Every key: id, role, label, created, last used (to within a minute)."""
    from access.auth import KeyStore

    with _redis(Settings.from_env()) as client:
        rows = KeyStore(client).list()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} API keys (times in UTC)")
    for column in ("id", "role", "label", "created", "last used"):
        table.add_column(column)
    for r in rows:
        when = _minute(r["created"]), _minute(r["last_used"])
        table.add_row(r["id"], r["role"], r["label"], *when)
    console.print(table)


@keys.command("revoke", short_help="Revoke a key, given in full or by its id.")
@click.argument("key", required=False)
@click.option("--id", "key_id", default=None, help="The key's id (from `occupancy keys list`).")
def keys_revoke(key: str | None, key_id: str | None) -> None:
    """Revoke a key, given in full (KEY) or by its id (--id)."""
    from access import auth
    from observability.audit import recorded

    if (key is None) == (key_id is None):
        raise click.UsageError("give the key or --id, one of the two")
    which = key_id if key is None else auth.key_id(auth.key_hash(key))  # never the key
    with _redis(Settings.from_env()) as client, recorded(client, "keys revoke", id=which):
        store = auth.KeyStore(client)
        if not (store.revoke(key) if key else store.revoke_id(key_id)):
            raise click.ClickException("no such key")
    click.echo("revoked")


@keys.command("rotate-signing", short_help="Sign device tokens with a new key from now on.")
def keys_rotate_signing() -> None:
    """Start signing device tokens with a new key; tokens signed before keep working until
    they expire (or their key is retired). Prints the new key's id."""
    from access.tokens import SigningKeys
    from observability.audit import recorded
    from occupancy import local_files

    settings = Settings.from_env()
    local_files.secret(settings)  # the keys derive from it: refuse a bad one before anything
    with _redis(settings) as client, recorded(client, "keys rotate-signing") as params:
        params["kid"] = SigningKeys(client).rotate()
    click.echo(params["kid"])


@keys.command("signing", short_help="The device-token signing keys and their states.")
def keys_signing() -> None:
    """The device-token signing keys: id, created, and whether it signs (current), verifies
    what it signed (previous) or verifies nothing (retired)."""
    from access.tokens import SigningKeys

    with _redis(Settings.from_env()) as client:
        signing = SigningKeys(client)
        rows = signing.all()
        current = signing.current() if rows else None
    table = Table(title="device-token signing keys (times in UTC)")
    for column in ("id", "created", "state"):
        table.add_column(column)
    for kid, row in rows.items():
        state = "current" if kid == current else "retired" if row["retired"] else "previous"
        table.add_row(kid, _minute(row["created"]), state)
    console.print(table)


@keys.command("retire-signing", short_help="Invalidate every token signed with one key.")
@click.argument("kid")
def keys_retire_signing(kid: str) -> None:
    """Make every token signed with KID invalid at once (a key believed leaked). Rotate
    first: the current key cannot be retired."""
    from access.tokens import SigningKeys
    from observability.audit import recorded

    with _redis(Settings.from_env()) as client, recorded(client, "keys retire-signing", kid=kid):
        try:
            SigningKeys(client).retire(kid)
        except (KeyError, ValueError) as exc:
            raise click.ClickException(str(exc).strip("'\"")) from None
    click.echo("retired")


# -- device tokens ---------------------------------------------------------------------------------


class _TokenGroup(click.Group):
    """`occupancy token DEVICE_ID` issues (the `issue` subcommand is implied)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["issue", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_TokenGroup, short_help="Issue or revoke device tokens.")
def token() -> None:
    """Device tokens, each bound to one device id, with an expiry and a token id.

    \b
    occupancy token phone-42 --ttl 30d     issue (`token issue revoke` for a device named so)
    occupancy token revoke tok_...         revoke one token by its id
    occupancy token revoke phone-42        revoke every token issued to phone-42 so far
    """


@token.command("issue", short_help="Print a device token bound to one device id.")
@click.argument("device_id")
@click.option(
    "--ttl",
    default="365d",
    show_default=True,
    help="Lifetime: a number with a unit (s, m, h, d, w, y), at most 5 years.",
)
def token_issue(device_id: str, ttl: str) -> None:
    """Print a device token bound to DEVICE_ID, for `authorization: Bearer <token>`; its id
    and expiry go to stderr."""
    from access.tokens import DeviceTokens
    from observability.audit import recorded
    from occupancy import local_files

    settings = Settings.from_env()
    secret = local_files.secret(settings)
    with _redis(settings) as client:
        device = _pseudonym(client, device_id)
        with recorded(client, "token issue", device=device, ttl=ttl) as params:
            try:
                text, claims = DeviceTokens(client, secret).issue(device_id, parse_ttl(ttl))
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
            params |= {"token_id": claims.token_id, "kid": claims.kid}
    click.echo(text)
    click.echo(
        f"token id {claims.token_id} · device {device_id} · expires {_iso(claims.expires_ms)} "
        f"· signing key {claims.kid}",
        err=True,
    )


@token.command("revoke", short_help="Revoke a token by its id, or every token of a device.")
@click.argument("what")
@click.option("--device", is_flag=True, help="WHAT is a device id, whatever it looks like.")
def token_revoke(what: str, device: bool) -> None:
    """Revoke the token with id WHAT (`tok_...`, or the token itself), or every token issued
    so far to the device WHAT. Ingest refuses them within a second; open streams end."""
    from access.tokens import DeviceTokens
    from observability.audit import recorded
    from occupancy import local_files

    settings = Settings.from_env()
    secret = local_files.secret(settings)
    with _redis(settings) as client, recorded(client, "token revoke") as params:
        try:
            kind, which = DeviceTokens(client, secret).revoke(what, device)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        params["kind"] = kind
        if kind == "token":
            params["token_id"] = which
        else:  # a device: by its pseudonym (None if it never sent)
            params["device"] = _pseudonym(client, which)
    if kind == "token":
        click.echo(f"token {which} revoked")
    else:
        click.echo(f"every token of device {which} issued until now revoked")
