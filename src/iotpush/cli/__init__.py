"""The ``iotpush`` command: a thin layer of options over the library.

Every option can also be set by an environment variable ``IOTPUSH_<COMMAND>_<OPTION>`` (for
``serve``: ``IOTPUSH_SERVE_PORT``...), and the store of every command by ``IOTPUSH_STORE``.
One module per command group; this one holds the ``main`` group that gathers them.
"""

from __future__ import annotations

import click

from . import config, db, inbox, messages, send, serve, tracking


@click.group(context_settings={"auto_envvar_prefix": "IOTPUSH", "show_default": True})
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
