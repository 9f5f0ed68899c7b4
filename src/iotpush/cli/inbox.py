"""``iotpush inbox`` and ``iotpush quarantine``: the kept and the refused notifications."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click
import msgspec

from .._jsonlimits import JSONLimits
from .._when import format_ts
from ..inbox import STATES, AdminInbox, Entry, Selection
from ..quarantine import QuarantineReplay, decode_for_path, replay_quarantined, select_quarantined
from ..server import Config
from ..trackers import TRACKED_TYPES
from ._shared import (
    COUNT,
    TYPE_CHOICE,
    WHEN,
    confirm,
    dry_run_option,
    inbox_call,
    inbox_read,
    store_option,
    tally_lines,
    yes_option,
)

MORE_COUNTED = 10_000
"""How many later entries `inbox ls` counts at most (its last line says "over" beyond)."""


@click.group()
def quarantine() -> None:
    """Bodies the receiver refused (bad JSON, unknown type...), kept for the operator."""


@quarantine.command("ls")
@store_option
@click.option("--limit", default=50, type=int)
@click.option("--after", default=0, type=int, help="Only records with an id above this.")
def quarantine_ls(store: str, limit: int, after: int) -> None:
    """List refused bodies, oldest first."""
    records = inbox_read(store, lambda inbox: inbox.quarantined(limit=limit, after=after))
    if not records:
        click.echo("quarantine is empty")
    for r in records:
        click.echo(
            f"{r.id:>6}  {format_ts(r.received_at)}  {r.status}  {r.path}  {r.field}: {r.reason}"
        )


@quarantine.command("show")
@click.argument("id", type=int)
@store_option
def quarantine_show(id: int, store: str) -> None:
    """Show one refused body with its headers."""
    r = inbox_read(store, lambda inbox: inbox.get_quarantined(id))
    click.echo(
        f"id: {r.id}\nreceived: {format_ts(r.received_at)}\npath: {r.path}\nstatus: {r.status}"
    )
    click.echo(f"reason: {r.reason}\nfield: {r.field}")
    for name, value in r.headers.items():
        click.echo(f"header {name}: {value}")
    click.echo(f"body ({len(r.body)} bytes):")
    click.echo(r.body.decode("utf-8", "backslashreplace"))


_SERVE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}


def _limit(flag: str, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A bound ``serve`` has too, with its default and its ``IOTPUSH_SERVE_*`` variable."""
    key = flag.lstrip("-").replace("-", "_")
    return click.option(
        flag, key, type=COUNT, default=_SERVE_DEFAULTS[key], show_envvar=True,
        envvar=f"IOTPUSH_SERVE_{key.upper()}", help=help,
    )  # fmt: skip


def _replay_line(r: QuarantineReplay) -> str:
    if r.entry_id is None:
        return f"{r.id:>6}  refused    {r.field}: {r.reason}"
    return f"{r.id:>6}  {'duplicate' if r.duplicate else 'accepted':<9}  entry {r.entry_id}"


@quarantine.command("replay")
@click.argument("ids", nargs=-1, type=int)
@store_option
@click.option("--since", default=None, type=WHEN, help="Received at or after: a time, or 2h.")
@click.option("--until", default=None, type=WHEN, help="Received before: a time, or 2h.")
@click.option("--status", default=None, type=int, help="Only those refused with this status.")
@_limit("--max-body", "Largest body accepted, in bytes, as serve's.")
@_limit("--max-depth", "Deepest JSON nesting of a body (0: any), as serve's.")
@_limit("--max-members", "Most members of a JSON object or array (0: any), as serve's.")
@_limit("--max-string", "Longest JSON string, in characters (0: any), as serve's.")
@_limit("--quarantine-max-body", "Bytes serve kept of each refused body (0: all).")
@yes_option
@dry_run_option
def quarantine_replay(ids: tuple[int, ...], store: str, since: float | None, until: float | None,
                      status: int | None, max_body: int, max_depth: int, max_members: int,
                      max_string: int, quarantine_max_body: int, yes: bool,
                      dry_run: bool) -> None:  # fmt: skip
    """Run refused bodies again through today's decoder and JSON bounds: by IDS, or by filter
    (--since, --until, --status; none given: every one).

    An accepted body becomes an entry, delivered and tracked like any other, with its original
    receipt time; one still refused keeps today's reason. A body cut when it was kept (at
    --max-body or --quarantine-max-body) cannot be replayed. Prints how many it will replay and
    asks first (--yes: do not ask; --dry-run: only count).
    """
    limits = JSONLimits(max_depth or None, max_members or None, max_string or None)
    chosen = list(ids) or inbox_call(
        store, lambda inbox: select_quarantined(inbox, since=since, until=until, status=status)
    )
    if not confirm("replay", f"{len(chosen)} refused bodies", len(chosen), yes=yes,
                   dry_run=dry_run):  # fmt: skip
        return

    async def replay(inbox: AdminInbox) -> list[QuarantineReplay]:
        return [
            await replay_quarantined(
                inbox,
                id,
                decode_for_path,
                max_body=max_body,
                limits=limits if limits.active else None,
                kept_max_body=quarantine_max_body,
            )
            for id in chosen
        ]

    results = inbox_call(store, replay)
    for r in results:
        click.echo(_replay_line(r))
    accepted = sum(r.entry_id is not None for r in results)
    click.echo(f"accepted {accepted}, still refused {len(results) - accepted}")


@click.group()
def inbox() -> None:
    """Accepted notifications and their delivery: inspect, replay, purge."""


@inbox.command("stats")
@store_option
def inbox_stats(store: str) -> None:
    """Counts by state and type, and how old the oldest undelivered entry is.

    Reads every entry (a count of each type in each state): seconds on a store of millions.
    What waits (pending, claimed, dead, the outbox, the oldest undelivered) is cheap to read on
    any store: the gauges of /metrics and the console's overview show it.
    """
    s = inbox_read(store, lambda inbox: inbox.stats())
    click.echo(
        f"entries: {s.total}  duplicates caught: {s.duplicates}  quarantined: {s.quarantined}"
    )
    click.echo("by state: " + ", ".join(f"{st} {s.by_state.get(st, 0)}" for st in STATES))
    age = s.oldest_pending_age
    click.echo("oldest undelivered: " + ("none" if age is None else f"{age:.1f} s ago"))
    if s.unpublished:
        waiting = sorted(s.unpublished.items())
        click.echo("unpublished: " + ", ".join(f"{sink} {n}" for sink, n in waiting))
    if s.by_type:
        click.echo(f"{'type':<44}" + "".join(f"{st:>9}" for st in STATES))
        for name, counts in sorted(s.by_type.items()):
            click.echo(f"{name:<44}" + "".join(f"{counts.get(st, 0):>9}" for st in STATES))


def _selection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed(
        [
            click.option("--state", "states", multiple=True, type=click.Choice(STATES)),
            click.option("--type", "type_", default=None, type=TYPE_CHOICE),
            click.option("--device", default=None),
            click.option(
                "--since", default=None, type=WHEN, help="A time, or a duration ago (2h)."
            ),
            click.option("--until", default=None, type=WHEN, help="A time, or a duration ago."),
        ]
    ):
        fn = decorator(fn)
    return fn


def _entry_table(entries: list[Entry]) -> list[str]:
    """Entries as aligned columns under a header."""
    rows = [
        (str(e.id), format_ts(e.received_at), e.state, str(e.attempts), e.type, e.device or "-")
        for e in entries
    ]
    header = ("id", "received", "state", "attempts", "type", "device")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    right = (True, False, False, True, False, False)  # numbers align right

    def line(row: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ]
        return "  ".join(cells).rstrip()

    return [line(header), *map(line, rows)]


@inbox.command("ls")
@store_option
@_selection_options
@click.option("--limit", default=50, type=click.IntRange(1, 10_000), help="Entries to list.")
@click.option("--after", default=0, type=int, help="Only entries with an id above this.")
def inbox_ls(store: str, states: tuple[str, ...], type_: str | None, device: str | None,
             since: float | None, until: float | None, limit: int, after: int) -> None:  # fmt: skip
    """List entries, oldest first: id, received, state, attempts, type, device.

    Lists at most --limit; the last line says how many more match (counted up to 10000) and the
    --after that lists them.
    """
    sel = Selection(states=states or None, type=type_, device=device, since=since, until=until)  # type: ignore[arg-type]

    async def page(inbox: AdminInbox) -> tuple[list[Entry], int]:
        entries = await inbox.find(sel, limit=limit, after=after)
        if not entries:
            return entries, 0
        # Counted up to a bound: a count of every later entry would read the whole inbox.
        counted = await inbox.tally(sel, after=entries[-1].id, limit=MORE_COUNTED + 1)
        return entries, counted.total

    entries, more = inbox_read(store, page)
    if not entries:
        click.echo("no entries match")
        return
    for line in _entry_table(entries):
        click.echo(line)
    if more:
        shown = f"{more}" if more <= MORE_COUNTED else f"over {MORE_COUNTED}"
        click.echo(f"... {shown} more: add --after {entries[-1].id} for the next page")


@inbox.command("show")
@click.argument("id", type=int)
@store_option
def inbox_show(id: int, store: str) -> None:
    """Show one entry: its state, attempts, last error and body."""
    e = inbox_read(store, lambda inbox: inbox.get(id))
    for name in ("id", "type", "device", "state", "attempts", "key", "path", "owner", "duplicates"):
        click.echo(f"{name}: {getattr(e, name)}")
    for name in ("received_at", "due_at", "lease_until", "finished_at", "last_duplicate_at"):
        click.echo(f"{name}: {format_ts(getattr(e, name))}")
    click.echo("headers: " + msgspec.json.encode(e.headers).decode())
    click.echo("body: " + e.body.decode("utf-8", "backslashreplace"))
    if e.last_error:
        click.echo("last error:\n" + e.last_error)


@inbox.command("replay")
@click.argument("ids", nargs=-1, type=int)
@store_option
@_selection_options
@yes_option
@dry_run_option
def inbox_replay(ids: tuple[int, ...], store: str, states: tuple[str, ...], type_: str | None,
                 device: str | None, since: float | None, until: float | None, yes: bool,
                 dry_run: bool) -> None:  # fmt: skip
    """Deliver entries again: by IDS (done or dead), or by filter (dead ones, unless --state).

    Prints what it will replay and asks first (--yes: do not ask; --dry-run: only count). By
    IDS, or the dead ones, it reads only those; --state done reads every entry the other
    filters leave (all of them without --type, --device or --since).
    """
    sel = Selection(ids=ids or None, states=states or None, type=type_, device=device,  # type: ignore[arg-type]
                    since=since, until=until).replayable()  # fmt: skip
    tally = inbox_call(store, lambda inbox: inbox.tally(sel))
    if confirm("replay", f"{tally.total} entries", tally.total, tally_lines(tally), yes=yes,
               dry_run=dry_run):  # fmt: skip
        count = inbox_call(store, lambda inbox: inbox.replay(sel))
        click.echo(f"{count} entries queued for delivery again")


def _progress(total: int) -> None:
    click.echo(f"\rpurged {total}...", nl=False, err=True)


@inbox.command("purge")
@click.option("--before", required=True, type=WHEN, help="A time, or an age such as 7d.")
@store_option
@yes_option
@dry_run_option
def inbox_purge(before: float, store: str, yes: bool, dry_run: bool) -> None:
    """Delete delivered and dead entries received before a time (not the quarantine).

    Prints what it will delete and asks first (--yes: do not ask; --dry-run: only count).
    """
    tally = inbox_call(store, lambda inbox: inbox.purgeable(before))
    what = f"{tally.total} entries received before {format_ts(before)}"
    lines = tally_lines(tally)
    tracked = sum(n for (type_, _), n in tally.counts.items() if type_ in TRACKED_TYPES)
    if tracked:
        lines.append(f"the trackers used {tracked} of them: `trackers rebuild` will refuse after")
    if confirm("purge", what, tally.total, lines, yes=yes, dry_run=dry_run):
        count = inbox_call(store, lambda inbox: inbox.purge(before, progress=_progress))
        click.echo(f"\rpurged {count} entries received before {format_ts(before)}")


@quarantine.command("purge")
@click.option("--before", required=True, type=WHEN, help="A time, or an age such as 7d.")
@store_option
@yes_option
@dry_run_option
def quarantine_purge(before: float, store: str, yes: bool, dry_run: bool) -> None:
    """Delete refused bodies received before a time.

    Prints how many it will delete and asks first (--yes: do not ask; --dry-run: only count).
    """
    count = inbox_call(store, lambda inbox: inbox.count_quarantined(before))
    what = f"{count} refused bodies received before {format_ts(before)}"
    if confirm("purge", what, count, yes=yes, dry_run=dry_run):
        count = inbox_call(store, lambda inbox: inbox.purge_quarantine(before, progress=_progress))
        click.echo(f"\rpurged {count} refused bodies received before {format_ts(before)}")
