"""What the command groups share: the store option, parameter types, and calling the library."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import msgspec

from .._when import parse_duration, parse_when
from ..exceptions import IotpushError
from ..inbox import Inbox
from ..models import NOTIFICATION_TYPES
from ..server import DEFAULT_STORE, Config, open_store
from ..tracking import Tracking

T = TypeVar("T")

STORE_HELP = (
    "Where notifications are kept: sqlite:///FILE, postgresql://HOST/DB[?schema=NAME] or memory://."
)
store_option = click.option(
    "--store", envvar="IOTPUSH_STORE", default=DEFAULT_STORE, show_default=True, help=STORE_HELP
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
LIMIT = click.IntRange(1, 1000)
COUNT = click.IntRange(min=0)
TYPE_CHOICE = click.Choice(list(NOTIFICATION_TYPES))


class _Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return value if isinstance(value, float) else parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _When(click.ParamType):  # type: ignore[type-arg]
    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            return value if isinstance(value, float) else parse_when(str(value), time.time())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION, WHEN = _Duration(), _When()


@contextmanager
def library_errors() -> Iterator[None]:
    """Turn the library's errors into a one-line message and exit code 1."""
    try:
        yield
    except IotpushError as exc:
        raise click.ClickException(str(exc)) from exc


def inbox_call(store: str, fn: Callable[[Inbox], Awaitable[T]]) -> T:
    """Open ``store``, run ``fn`` on its inbox and close it again."""

    async def main() -> T:
        async with open_store(Config(store=store)) as inbox:
            return await fn(inbox)

    with library_errors():
        return asyncio.run(main())


def tracking_call(store: str, fn: Callable[[Tracking], Awaitable[T]]) -> T:
    """Open ``store``, run ``fn`` on its tracker queries and close it again."""
    return inbox_call(store, lambda inbox: fn(Tracking(inbox)))


def output(value: Any, as_json: bool, lines: Callable[[], Iterable[str]]) -> None:
    """Print ``value`` as indented JSON, or the plain text lines that describe it."""
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())
    else:
        for line in lines():
            click.echo(line)


def compact(value: Any) -> str:
    """``value`` as JSON on one line."""
    return msgspec.json.encode(value).decode()
