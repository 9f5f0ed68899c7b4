"""``iotpush commands``, ``devices`` and ``trackers``: what the trackers derived."""

from __future__ import annotations

import time
from collections.abc import Iterator

import click

from .._when import format_ts
from ..trackers import CommandRecord, DeviceRecord
from ..trackers.commands import RANKS
from ..tracking import MAX_VIEW_COMMANDS, DeviceView, finished_by_rebuild, lost_by_rebuild
from ._shared import (
    LIMIT,
    compact,
    confirm,
    dry_run_option,
    json_option,
    output,
    store_option,
    tracking_call,
    yes_option,
)


def _command_lines(records: list[CommandRecord]) -> list[str]:
    now, width = time.time(), max((len(r.command_id) for r in records), default=0)
    return [
        f"{r.command_id:<{width}}  {r.state or '-':<10} {format_ts(r.updated_at)}  "
        f"{r.device_id or '-'}{'  OVERDUE' if r.overdue(now) else ''}"
        for r in records
    ]


def _command_text(r: CommandRecord) -> Iterator[str]:
    yield f"command: {r.command_id}\ndevice: {r.device_id or '-'}"
    yield f"state: {r.state or '-'}{' (final)' if r.terminal else ''}"
    yield f"state since: {format_ts(r.state_at)}\ndetail: {compact(r.detail)}"
    overdue = " (overdue)" if r.overdue(time.time()) else ""
    yield f"expected: {format_ts(r.expected_at)}\ndeadline: {format_ts(r.deadline)}{overdue}"
    yield f"first seen: {format_ts(r.created_at)}\nlast update: {format_ts(r.updated_at)}"
    yield f"history ({len(r.history)}):"
    for e in r.history:
        note = "" if e.applied else "  (not applied: late or unknown)"
        yield (
            f"  {e.entry_id:>6}  {format_ts(e.received_at)}  {e.source:<22} {e.code or '-':<10} "
            f"{compact(e.detail)}{note}"
        )


def _command_state(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and value.upper() not in RANKS:
        raise click.BadParameter(f"{value!r} is not one of {', '.join(RANKS)}", ctx, param)
    return value


@click.group()
def commands() -> None:
    """Commands sent to devices: their state, history and deadline, as the trackers know them."""


@commands.command("show")
@click.argument("id")
@store_option
@json_option
def commands_show(id: str, store: str, as_json: bool) -> None:
    """Show one command: its state, the detail that came with it, deadline and history."""
    record = tracking_call(store, lambda tracking: tracking.command(id))
    output(record, as_json, lambda: _command_text(record))


@commands.command("ls")
@store_option
@click.option("--device", default=None, help="Only this device's commands.")
@click.option(
    "--state",
    default=None,
    callback=_command_state,
    help=f"Only commands in this state: {', '.join(RANKS)} (any case).",
)
@click.option("--overdue", is_flag=True, help="Only commands past their deadline, not finished.")
@click.option("--limit", default=50, type=LIMIT)
@click.option("--after", default=None, help="Only commands whose id sorts after this one.")
@json_option
def commands_ls(store: str, device: str | None, state: str | None, overdue: bool, limit: int,
                after: str | None, as_json: bool) -> None:  # fmt: skip
    """List commands by id: id, state, last update, device."""
    records = tracking_call(
        store,
        lambda t: t.commands(device=device, state=state, overdue=overdue, limit=limit, after=after),
    )
    output(records, as_json, lambda: _command_lines(records) or ["no commands match"])


def _device_line(r: DeviceRecord) -> str:
    deleted = f"  deleted {format_ts(r.deleted_at)}" if r.deleted_at is not None else ""
    status, node = r.status or "-", r.node_type or "-"
    return f"{r.device_id}  {status:<9} {node:<9} {format_ts(r.updated_at)}{deleted}"


def _device_text(view: DeviceView) -> Iterator[str]:
    d = view.device
    yield f"device: {d.device_id}\nstatus: {d.status or '-'}\nnode type: {d.node_type or '-'}"
    yield f"gateway: {d.gateway_id or '-'}\nbind result: {d.bind_result or '-'}"
    yield f"first seen: {format_ts(d.created_at)}\nlast update: {format_ts(d.updated_at)}"
    if d.deleted_at is not None:
        yield f"deleted: {format_ts(d.deleted_at)}"
    yield "info:" + ("" if d.info else " -")
    for name, value in sorted(d.info.items()):
        yield f"  {name}: {value if isinstance(value, str) else compact(value)}"
    yield "data:" + ("" if d.data else " -")
    for service, points in d.data.items():
        for name, p in points.items():
            yield f"  {service}.{name} = {compact(p.value)}  (event {format_ts(p.event_ts)})"
    yield "shadow:" + ("" if view.shadow else " -")
    for s in view.shadow:
        sync = "synced" if s.synced else "PENDING" if s.pending else "NOT SYNCED"
        yield f"  {s.service_id}: {s.status or '-'}, {sync}  {compact(s.properties)}"
    shown, total = len(view.commands), view.commands_total
    if shown < total:
        yield (
            f"commands: the {shown} most recently updated of {total}"
            f" (all: iotpush commands ls --device {d.device_id})"
        )
    else:
        yield "commands:" + ("" if view.commands else " -")
    yield from ("  " + line for line in _command_lines(view.commands))


@click.group()
def devices() -> None:
    """Devices: registry information, latest data, shadow sync and commands."""


@devices.command("ls")
@store_option
@click.option("--status", default=None, help="Only devices with this status (ONLINE, OFFLINE...).")
@click.option("--deleted", is_flag=True, help="Include deleted devices.")
@click.option("--limit", default=50, type=LIMIT)
@click.option("--after", default=None, help="Only devices whose id sorts after this one.")
@json_option
def devices_ls(store: str, status: str | None, deleted: bool, limit: int, after: str | None,
               as_json: bool) -> None:  # fmt: skip
    """List devices by id: id, status, node type, last update."""
    records = tracking_call(
        store,
        lambda t: t.devices(status=status, include_deleted=deleted, limit=limit, after=after),
    )
    output(records, as_json, lambda: [_device_line(r) for r in records] or ["no devices match"])


@devices.command("show")
@click.argument("id")
@store_option
@click.option(
    "--commands",
    default=100,
    type=click.IntRange(0, MAX_VIEW_COMMANDS),
    help="How many of its commands to show, most recently updated first.",
)
@json_option
def devices_show(id: str, store: str, commands: int, as_json: bool) -> None:
    """Show one device: info, latest data per property, shadow sync and recent commands."""
    view = tracking_call(store, lambda tracking: tracking.device(id, commands=commands))
    output(view, as_json, lambda: _device_text(view))


@click.group()
def trackers() -> None:
    """The tracker state derived from the kept notifications."""


@trackers.command("rebuild")
@store_option
@click.option("--batch", default=1000, type=click.IntRange(1, 100_000), help="Entries per step.")
@click.option(
    "--discard-purged",
    is_flag=True,
    help="Rebuild even though notifications the trackers used were purged, losing their state.",
)
@yes_option
@dry_run_option
def trackers_rebuild(
    store: str, batch: int, discard_purged: bool, yes: bool, dry_run: bool
) -> None:
    """Forget the tracker state and apply every kept notification again, in arrival order.

    Expectations the application registered (expected commands, desired properties) stay.
    Refused when notifications the trackers used were purged (their state cannot be derived
    again) unless --discard-purged; says how many finished records --finished-retention
    deleted (a rebuild brings back only what the kept notifications say of them). Prints what
    it will forget and apply and asks first (--yes: do not ask; --dry-run: only count).

    Reads every kept notification, --dry-run too (it counts them by type): on a store of
    millions, minutes.
    """
    plan = tracking_call(store, lambda t: t.rebuild_plan())
    if plan.purged is not None and not (discard_purged or dry_run):
        raise click.ClickException(
            lost_by_rebuild(plan.purged) + "; --discard-purged rebuilds from the kept ones only"
        )
    held = ", ".join(f"{n} {kind}" for kind, n in plan.records.items())
    what = f"the trackers ({held}) from {plan.notifications.total} kept notifications"
    lines = [f"{type_:<44} {n:>8}" for type_, n in plan.notifications.by_type().items()]
    if plan.purged is not None:
        lines.insert(0, f"losing what {plan.purged.entries} purged notifications said")
    if (finished := finished_by_rebuild(plan.finished)) is not None:
        lines.insert(0, finished)
    count = plan.notifications.total + sum(plan.records.values())
    if not confirm("rebuild", what, count, lines, yes=yes, dry_run=dry_run):
        return

    def progress(applied: int) -> None:
        click.echo(f"\rapplied {applied} notifications...", nl=False, err=True)

    count = tracking_call(
        store,
        lambda t: t.rebuild(batch=batch, progress=progress, discard_purged=discard_purged),
        write=True,
    )
    click.echo(err=True)
    click.echo(f"rebuilt the trackers from {count} notifications")
