"""``iotpush messages`` and ``tasks``: what the v5 message and batch task trackers derived."""

from __future__ import annotations

from collections.abc import Iterator

import click

from .._when import format_ts
from ..trackers.messages import MessageRecord
from ..trackers.tasks import TaskRecord
from ._shared import compact, json_option, output, store_option, tracking_call


def _message_text(r: MessageRecord) -> Iterator[str]:
    yield f"message: {r.message_id}\ndevice: {r.device_id or '-'}"
    yield f"name: {r.name or '-'}\ntopic: {r.topic or '-'}"
    yield f"status: {r.status or '-'}{' (final)' if r.final else ''}"
    if r.error is not None:
        yield f"error: {compact(r.error)}"
    yield f"first seen: {format_ts(r.created_at)}\nlast update: {format_ts(r.updated_at)}"
    yield f"history ({len(r.history)}):"
    for e in r.history:
        note = "" if e.applied else "  (not applied: late or unknown)"
        error = "" if e.error is None else f"  {compact(e.error)}"
        yield (
            f"  {e.entry_id:>6}  {format_ts(e.received_at)}  {e.status:<10} "
            f"{e.status_time or '-'}{error}{note}"
        )


def _task_text(r: TaskRecord) -> Iterator[str]:
    yield f"task: {r.task_id}\ntype: {r.task_type or '-'}\napp: {r.app_id or '-'}"
    yield f"status: {r.status or '-'}{' (final)' if r.final else ''}"
    yield f"description: {r.status_desc or '-'}"
    yield f"first seen: {format_ts(r.created_at)}\nlast update: {format_ts(r.updated_at)}"
    yield f"history ({len(r.history)}):"
    for e in r.history:
        note = "" if e.applied else "  (not applied: late or unknown)"
        when = format_ts(e.received_at)
        yield f"  {e.entry_id:>6}  {when}  {e.status:<15} {e.status_desc or '-'}{note}"


@click.group()
def messages() -> None:
    """Messages sent down to devices (v5): their status and history."""


@messages.command("show")
@click.argument("id")
@store_option
@json_option
def messages_show(id: str, store: str, as_json: bool) -> None:
    """Show one message: its status, error and history."""
    record = tracking_call(store, lambda tracking: tracking.message(id))
    output(record, as_json, lambda: _message_text(record))


@click.group()
def tasks() -> None:
    """Batch tasks (v5: firmware and software upgrades...): their progress and history."""


@tasks.command("show")
@click.argument("id")
@store_option
@json_option
def tasks_show(id: str, store: str, as_json: bool) -> None:
    """Show one batch task: its status, description and history."""
    record = tracking_call(store, lambda tracking: tracking.task(id))
    output(record, as_json, lambda: _task_text(record))
