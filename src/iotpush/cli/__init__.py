"""The ``iotpush`` command: a thin layer of options over the library.

Every option can also be set by an environment variable ``IOTPUSH_<COMMAND>_<OPTION>`` (for
``serve``: ``IOTPUSH_SERVE_PORT``...), and the store of every command by ``IOTPUSH_STORE``.
One module per command group; this one holds the ``main`` group that gathers them.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click

from . import config, db, inbox, messages, send, serve, tracking


class _Group(click.Group):
    """The top-level group: a usage error anywhere below it is one line, naming where help is.

    Click's own answer is three lines (the usage, a hint, then the error); an operator reads the
    error first and needs the rest only when asking for it.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _one_line(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _one_line(exc)


# A group called without its command answers with its help (click >= 8.2): that one stays whole.
_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(exc: click.UsageError) -> NoReturn:
    if isinstance(exc, _HELP):
        raise exc
    where = exc.ctx.command_path if exc.ctx is not None else "iotpush"
    raise click.UsageError(f"{exc.format_message()} (see '{where} --help')") from None


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": "IOTPUSH", "show_default": True})
@click.version_option(package_name="iotpush", prog_name="iotpush")
def main() -> None:
    """iotpush: a durable receiver for the IoT platform's push notifications."""


for _command in (
    serve.serve, send.send, send.examples, inbox.quarantine, inbox.inbox,
    tracking.commands, tracking.devices, tracking.trackers, db.db, config.config,
    messages.messages, messages.tasks,
):  # fmt: skip
    main.add_command(_command)

__all__ = ["main"]
