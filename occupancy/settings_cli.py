"""The settings as flags of `occupancy up`: one per `OCC_*` setting but the secret, checked
against the same ranges as the variable."""

from pathlib import Path
from urllib.parse import urlsplit

import click
from pydantic.fields import FieldInfo

from occupancy.settings import URL_FIELDS, Settings, bounds, env_name

# flags show in `ps` and in shell histories: the secret comes from OCC_SECRET or OCC_SECRET_FILE
ENV_ONLY = ("secret",)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def settings_options(command):
    """A flag for each setting but those in ENV_ONLY (default None: the variable, else the
    setting's default, applies), passed to the command by field name."""
    for name, field in reversed(Settings.model_fields.items()):
        if name in ENV_ONLY:
            continue
        default = field.get_default()
        shown = "empty" if default == "" else default
        command = click.option(
            flag(name),
            name,
            type=click_type(field),
            default=None,
            callback=_no_password if name in URL_FIELDS else None,
            help=f"{field.description} [{env_name(name)}; default: {shown}]",
        )(command)
    return command


def click_type(field: FieldInfo) -> click.ParamType:
    """The click type of a setting, with its range or choices."""
    choices = getattr(field.annotation, "__args__", None)
    if choices and all(isinstance(c, str) for c in choices):
        return click.Choice(choices)
    if field.annotation is Path:
        return click.Path(path_type=Path, file_okay=False)
    number = {int: click.IntRange, float: click.FloatRange}.get(field.annotation)
    if number is None:
        return click.STRING
    low, above, high = bounds(field)
    if above is not None:
        return number(min=above, max=high, min_open=True)
    return number(min=low, max=high)


def _no_password(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value and urlsplit(value).password:
        raise click.BadParameter(
            f"a password in a flag shows in `ps`: set {env_name(param.name)} instead", ctx, param
        )
    return value
