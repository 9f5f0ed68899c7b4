"""What the command groups share: the store option, parameter types, and calling the library."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import msgspec

from .._when import parse_duration, parse_when
from ..exceptions import IotpushError
from ..formats import FORMATS
from ..inbox import AdminInbox, Inbox, Mode, Tally
from ..server import DEFAULT_STORE, Config, open_store
from ..tracking import Tracking

T = TypeVar("T")

STORE_HELP = (
    "Where notifications are kept: sqlite:///relative/path.db (three slashes),"
    " sqlite:////absolute/path.db (four), postgresql://HOST/DB[?schema=NAME] or memory://."
)
store_option = click.option(
    "--store", envvar="IOTPUSH_STORE", default=DEFAULT_STORE, show_default=True, help=STORE_HELP
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
LIMIT = click.IntRange(1, 1000)
COUNT = click.IntRange(min=0)
TYPE_CHOICE = click.Choice(list(FORMATS.types))


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


yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Only print what the command would touch."
)


def confirm(
    verb: str, what: str, count: int, details: Iterable[str] = (), *, yes: bool, dry_run: bool
) -> bool:
    """Say what a destructive command will touch, and whether it may go on.

    Prints ``will {verb} {what}`` (``what`` holds the ``count``) and the ``details`` lines.
    With nothing to touch, or ``dry_run``, returns False; with ``yes``, True; on a terminal,
    asks.

    Raises:
        click.ClickException: No terminal to ask on and no ``yes`` (one line, exit 1).
    """
    if count and not yes and not dry_run and not sys.stdin.isatty():
        raise click.ClickException(
            f"not going to {verb} {what} without confirmation:"
            " pass --yes (or --dry-run to only count)"
        )
    if not count:
        click.echo(f"nothing to {verb}")
        return False
    click.echo(f"{'would' if dry_run else 'will'} {verb} {what}")
    for line in details:
        click.echo(f"  {line}")
    if not dry_run and not yes:
        click.confirm("Go on?", abort=True)
    return not dry_run


def tally_lines(tally: Tally) -> list[str]:
    """A tally as lines for `confirm`: by state, then by type."""
    states = ", ".join(f"{state} {n}" for state, n in tally.by_state().items())
    return [f"by state: {states}", *(f"{type_:<44} {n:>8}" for type_, n in tally.by_type().items())]


def inbox_call(store: str, fn: Callable[[AdminInbox], Awaitable[T]]) -> T:
    """Open an existing ``store`` to write it, run ``fn`` on its inbox and close it again."""
    return _with_inbox(store, fn, "write")


def inbox_read(store: str, fn: Callable[[AdminInbox], Awaitable[T]]) -> T:
    """Open an existing ``store`` read-only, run ``fn`` on its inbox and close it again."""
    return _with_inbox(store, fn, "read")


def _with_inbox(store: str, fn: Callable[[Inbox], Awaitable[T]], mode: Mode) -> T:
    async def main() -> T:
        async with open_store(Config(store=store), mode=mode) as inbox:
            return await fn(inbox)

    with library_errors():
        return asyncio.run(main())


def tracking_call(store: str, fn: Callable[[Tracking], Awaitable[T]], *, write: bool = False) -> T:
    """Open an existing ``store`` (read-only unless ``write``), run ``fn`` on its tracker
    queries and close it again."""
    return _with_inbox(store, lambda inbox: fn(Tracking(inbox)), "write" if write else "read")


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
