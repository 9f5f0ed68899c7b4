"""``iotpush config``: the configuration ``serve`` would run with."""

from __future__ import annotations

from typing import Any

import click

from ..server import Config
from ._settings import SettingsCommand, effective
from ._shared import library_errors
from .serve import GROUPS, serve


@click.group()
def config() -> None:
    """The settings of `iotpush serve`: command line, environment, --config file, defaults."""


def _show(receiver: str | None, **options: Any) -> None:
    ctx = click.get_current_context()
    for line in effective(ctx):
        click.echo(line)
    options["synchronous"] = options["synchronous"].upper()
    with library_errors():
        Config(receiver=receiver, **options).check()


config.add_command(
    SettingsCommand(
        "show",
        params=serve.params,
        callback=_show,
        groups=GROUPS,
        help="Print the settings serve would run with, as a TOML file: each value with where it"
        " came from (secrets masked). Takes serve's options; exits 1 if serve would refuse them.",
    )
)
