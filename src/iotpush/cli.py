"""The ``iotpush`` command: a thin layer of options over the library.

Every option can also be set by an environment variable ``IOTPUSH_<COMMAND>_<OPTION>`` (for
``serve``: ``IOTPUSH_SERVE_PORT``...), and the store of every command by ``IOTPUSH_STORE``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from ._when import format_ts, parse_duration, parse_when
from .exceptions import IotpushError
from .inbox import STATES, Entry, Inbox, Selection
from .models import NOTIFICATION_TYPES
from .server import DEFAULT_STORE, Config, open_store, run
from .trackers import CommandRecord, DeviceRecord
from .tracking import MAX_VIEW_COMMANDS, DeviceView, Tracking

T = TypeVar("T")

store_option = click.option(
    "--store",
    envvar="IOTPUSH_STORE",
    default=DEFAULT_STORE,
    show_default=True,
    help="Where notifications are kept: sqlite:///FILE, postgresql://HOST/DB[?schema=NAME]"
    " or memory://.",
)


def _inbox_call(store: str, fn: Callable[[Inbox], Awaitable[T]]) -> T:
    async def main() -> T:
        async with open_store(Config(store=store)) as inbox:
            return await fn(inbox)

    try:
        return asyncio.run(main())
    except IotpushError as exc:
        raise click.ClickException(str(exc)) from exc


def _tracking_call(store: str, fn: Callable[[Tracking], Awaitable[T]]) -> T:
    return _inbox_call(store, lambda inbox: fn(Tracking(inbox)))


json_option = click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
LIMIT = click.IntRange(1, 1000)


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
COUNT = click.IntRange(min=0)
_OFF_AT_ZERO = (
    "max_in_flight", "max_pending_writes", "body_timeout", "header_timeout",
    "limit_concurrency", "quarantine_max_rows",
)  # fmt: skip
TYPE_CHOICE = click.Choice(list(NOTIFICATION_TYPES))


@click.group(context_settings={"auto_envvar_prefix": "IOTPUSH", "show_default": True})
@click.version_option(package_name="iotpush")
def main() -> None:
    """iotpush: a durable receiver for the IoT platform's push notifications."""


@main.command()
@click.argument("receiver", required=False)
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8080, type=int, help="Port to listen on.")
@store_option
@click.option(
    "--synchronous",
    type=click.Choice(["OFF", "NORMAL", "FULL", "EXTRA"], case_sensitive=False),
    default="FULL",
    help="SQLite durability: FULL survives power loss, NORMAL a crash.",
)
@click.option("--path", default="/v1.0.0/messageReceiver", help="The callback URL's path.")
@click.option(
    "--command-path", default=None, help="NB-IoT command status path [default: PATH/cmd]."
)
@click.option("--max-body", default=1024 * 1024, type=int, help="Largest body accepted, in bytes.")
@click.option(
    "--dedupe-window", default="48h", type=DURATION, help="How long duplicates are recognised."
)
@click.option("--concurrency", default=32, type=int, help="Deliveries to handlers at once.")
@click.option(
    "--max-attempts", default=8, type=int, help="Attempts before an entry is dead-lettered."
)
@click.option(
    "--backoff", default="1s", type=DURATION, help="Wait before the first retry (doubles)."
)
@click.option(
    "--handler-timeout", default="60s", type=DURATION, help="Time limit of one handler call."
)
@click.option(
    "--watch-interval", default="5s", type=DURATION, help="How often to look for overdue commands."
)
@click.option(
    "--lease",
    default="60s",
    type=DURATION,
    help="How long a claim lasts unrenewed: another server takes over a dead one's work after.",
)
@click.option(
    "--sink",
    "sinks",
    metavar="URL",
    multiple=True,
    envvar="IOTPUSH_SERVE_SINK",
    help="Also publish every kept notification to NATS JetStream: nats://HOST:PORT"
    "[?stream=IOTPUSH&prefix=iotpush] (repeatable; needs iotpush[nats]).",
)
@click.option("--ssl-certfile", default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--ssl-keyfile", default=None, help="The certificate's private key (PEM).")
@click.option("--ssl-ca-certs", default=None, help="CA bundle to verify client certificates with.")
@click.option(
    "--ssl-cert-reqs",
    default="none",
    type=click.Choice(["none", "optional", "required"]),
    help="Whether clients must present a certificate signed by --ssl-ca-certs.",
)
@click.option(
    "--api-token",
    "api_tokens",
    multiple=True,
    envvar="IOTPUSH_SERVE_API_TOKEN",
    help="Bearer token for the query API (repeatable); required off loopback.",
)
@click.option(
    "--path-token",
    metavar="TOKEN",
    default=None,
    help="Serve the receive paths under /TOKEN (16+ letters, digits, - . _ ~).",
)
@click.option(
    "--allow-ip",
    "allow_ips",
    metavar="CIDR",
    multiple=True,
    envvar="IOTPUSH_SERVE_ALLOW_IP",
    help="Accept pushes only from this address or CIDR network (repeatable).",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    metavar="CIDR",
    multiple=True,
    envvar="IOTPUSH_SERVE_TRUSTED_PROXY",
    help="A proxy (address or CIDR) whose X-Forwarded-For --allow-ip believes (repeatable).",
)
@click.option(
    "--signing-secret",
    "signing_secrets",
    metavar="SECRET",
    multiple=True,
    envvar="IOTPUSH_SERVE_SIGNING_SECRET",
    help="Require Standard Webhooks signatures by this whsec_... or text secret (repeatable).",
)
@click.option(
    "--signature-tolerance",
    default="5m",
    type=DURATION,
    help="How far a signature's webhook-timestamp may be from now.",
)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@click.option(
    "--max-depth", default=32, type=COUNT, help="Deepest JSON nesting of a body (0: any)."
)
@click.option(
    "--max-members",
    default=1000,
    type=COUNT,
    help="Most members of a JSON object or array (0: any).",
)
@click.option(
    "--max-string",
    default=64 * 1024,
    type=COUNT,
    help="Longest JSON string, in characters (0: any).",
)
@click.option(
    "--max-in-flight",
    default=1000,
    type=COUNT,
    help="Pushes received at once; beyond, 503 (0: any).",
)
@click.option(
    "--max-pending-writes",
    default=10_000,
    type=COUNT,
    help="Pushes queued for the SQLite inbox; beyond, 503 (0: any).",
)
@click.option(
    "--body-timeout", default="30s", type=DURATION, help="Time a body may take; then 408 (0: any)."
)
@click.option(
    "--header-timeout",
    default="30s",
    type=DURATION,
    help="Time a request's headers may take; then the connection is closed (0: any).",
)
@click.option(
    "--keep-alive-timeout",
    default=5,
    type=click.IntRange(min=1),
    help="Seconds an idle connection is kept open.",
)
@click.option(
    "--limit-concurrency",
    default=0,
    type=COUNT,
    help="Connections and requests at once; beyond, uvicorn answers 503 (0: any).",
)
@click.option(
    "--quarantine-max-rows",
    default=100_000,
    type=COUNT,
    help="Refused bodies kept; beyond, the oldest are deleted (0: all).",
)
@click.option(
    "--quarantine-max-body",
    default=64 * 1024,
    type=COUNT,
    help="Bytes kept of each refused body (0: all).",
)
@click.option(
    "--reuse-port",
    is_flag=True,
    help="Let several servers listen on one port (SO_REUSEPORT); needs a PostgreSQL store.",
)
def serve(receiver: str | None, **options: Any) -> None:
    """Run the receiver. RECEIVER is MODULE:ATTR; without one, notifications are printed as JSON."""
    options["synchronous"] = options["synchronous"].upper()
    for name in _OFF_AT_ZERO:  # 0 turns these bounds off
        options[name] = options[name] or None
    try:
        run(Config(receiver=receiver, **options))
    except IotpushError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("kind")
@click.option(
    "--url", default="http://127.0.0.1:8080/v1.0.0/messageReceiver", help="Callback URL to post to."
)
@click.option("--count", default=1, type=int, help="How many notifications to post.")
@click.option(
    "--rate",
    default=None,
    type=float,
    help="Notifications per second (default: as fast as possible).",
)
@click.option("--concurrency", default=1, type=int, help="Requests in flight at once.")
@click.option(
    "--device", default=None, help="Device id to use (default: a new one per notification)."
)
def send(
    kind: str, url: str, count: int, rate: float | None, concurrency: int, device: str | None
) -> None:
    """Post notifications as the platform does. KIND: a notifyType, 'mix', or a JSON file.

    Each notification is new (fresh ids and times) unless a FILE is sent, which is posted as is.
    """
    from . import testing

    if kind in NOTIFICATION_TYPES or kind == "mix":
        kinds = list(NOTIFICATION_TYPES) if kind == "mix" else [kind]

        def make(i: int) -> Any:
            chosen = kinds[i % len(kinds)]
            fields = NOTIFICATION_TYPES[chosen].__struct_fields__
            # One device: directly connected, so its gateway is itself (as in the spec examples).
            overrides: dict[str, Any] = {
                name: device for name in ("device_id", "gateway_id") if device and name in fields
            }
            return testing.build(chosen, **overrides)

        bodies: Any = make
    elif Path(kind).is_file():
        bodies = [Path(kind).read_bytes()]
    else:
        raise click.BadParameter(f"{kind!r} is neither a notifyType nor a file", param_hint="KIND")
    report = asyncio.run(testing.send(url, bodies, count=count, rate=rate, concurrency=concurrency))
    click.echo(str(report))
    if report.ok < report.sent or report.errors:
        for status, n in sorted(report.by_status.items()):
            if status != 200:
                click.echo(f"  HTTP {status}: {n}", err=True)
        sys.exit(1)


@main.command()
@click.argument("kind", required=False, type=TYPE_CHOICE)
@click.option("--compact", is_flag=True, help="One line per body, as the platform sends it.")
def examples(kind: str | None, compact: bool) -> None:
    """Print an example body of KIND, or of every type."""
    from . import testing

    for name in [kind] if kind else list(NOTIFICATION_TYPES):
        body = testing.encode(testing.example(name), pretty=not compact)
        if not kind and not compact:
            click.echo(f"# {name}  (POST {testing.path_for(name)})")
        click.echo(body.decode())


@main.group()
def quarantine() -> None:
    """Bodies the receiver refused (bad JSON, unknown type...), kept for the operator."""


@quarantine.command("ls")
@store_option
@click.option("--limit", default=50, type=int)
@click.option("--after", default=0, type=int, help="Only records with an id above this.")
def quarantine_ls(store: str, limit: int, after: int) -> None:
    """List refused bodies, oldest first."""
    records = _inbox_call(store, lambda inbox: inbox.quarantined(limit=limit, after=after))
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
    r = _inbox_call(store, lambda inbox: inbox.get_quarantined(id))
    click.echo(
        f"id: {r.id}\nreceived: {format_ts(r.received_at)}\npath: {r.path}\nstatus: {r.status}"
    )
    click.echo(f"reason: {r.reason}\nfield: {r.field}")
    for name, value in r.headers.items():
        click.echo(f"header {name}: {value}")
    click.echo(f"body ({len(r.body)} bytes):")
    click.echo(r.body.decode("utf-8", "backslashreplace"))


@main.group()
def inbox() -> None:
    """Accepted notifications and their delivery: inspect, replay, purge."""


@inbox.command("stats")
@store_option
def inbox_stats(store: str) -> None:
    """Counts by state and type, and how old the oldest undelivered entry is."""
    s = _inbox_call(store, lambda inbox: inbox.stats())
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


def _entry_line(e: Entry) -> str:
    return (
        f"{e.id:>8}  {format_ts(e.received_at)}  {e.state:<8} {e.attempts:>2}  "
        f"{e.type:<28} {e.device or '-'}"
    )


@inbox.command("ls")
@store_option
@_selection_options
@click.option("--limit", default=50, type=int)
@click.option("--after", default=0, type=int, help="Only entries with an id above this.")
def inbox_ls(store: str, states: tuple[str, ...], type_: str | None, device: str | None,
             since: float | None, until: float | None, limit: int, after: int) -> None:  # fmt: skip
    """List entries, oldest first: id, received, state, attempts, type, device."""
    sel = Selection(states=states or None, type=type_, device=device, since=since, until=until)  # type: ignore[arg-type]
    entries = _inbox_call(store, lambda inbox: inbox.find(sel, limit=limit, after=after))
    if not entries:
        click.echo("no entries match")
    for e in entries:
        click.echo(_entry_line(e))


@inbox.command("show")
@click.argument("id", type=int)
@store_option
def inbox_show(id: int, store: str) -> None:
    """Show one entry: its state, attempts, last error and body."""
    e = _inbox_call(store, lambda inbox: inbox.get(id))
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
def inbox_replay(ids: tuple[int, ...], store: str, states: tuple[str, ...], type_: str | None,
                 device: str | None, since: float | None, until: float | None) -> None:  # fmt: skip
    """Deliver entries again: by IDS, or by selection (default: every dead-lettered entry)."""
    if not (ids or states or type_ or device or since or until):
        states = ("dead",)
    sel = Selection(ids=ids or None, states=states or None, type=type_, device=device,  # type: ignore[arg-type]
                    since=since, until=until)  # fmt: skip
    count = _inbox_call(store, lambda inbox: inbox.replay(sel))
    click.echo(f"{count} entries queued for delivery again")


@inbox.command("purge")
@click.option("--before", required=True, type=WHEN, help="A time, or an age such as 7d.")
@store_option
def inbox_purge(before: float, store: str) -> None:
    """Delete delivered and dead entries (and quarantined bodies) received before a time."""

    def progress(total: int) -> None:
        click.echo(f"\rpurged {total}...", nl=False, err=True)

    count = _inbox_call(store, lambda inbox: inbox.purge(before, progress=progress))
    click.echo(f"\rpurged {count} records received before {format_ts(before)}")


def _output(value: Any, as_json: bool, lines: Callable[[], Iterable[str]]) -> None:
    """Print ``value`` as indented JSON, or the plain text lines that describe it."""
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())
    else:
        for line in lines():
            click.echo(line)


def _compact(value: Any) -> str:
    return msgspec.json.encode(value).decode()


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
    yield f"state since: {format_ts(r.state_at)}\ndetail: {_compact(r.detail)}"
    overdue = " (overdue)" if r.overdue(time.time()) else ""
    yield f"expected: {format_ts(r.expected_at)}\ndeadline: {format_ts(r.deadline)}{overdue}"
    yield f"first seen: {format_ts(r.created_at)}\nlast update: {format_ts(r.updated_at)}"
    yield f"history ({len(r.history)}):"
    for e in r.history:
        note = "" if e.applied else "  (not applied: late or unknown)"
        yield (
            f"  {e.entry_id:>6}  {format_ts(e.received_at)}  {e.source:<22} {e.code or '-':<10} "
            f"{_compact(e.detail)}{note}"
        )


@main.group()
def commands() -> None:
    """Commands sent to devices: their state, history and deadline, as the trackers know them."""


@commands.command("show")
@click.argument("id")
@store_option
@json_option
def commands_show(id: str, store: str, as_json: bool) -> None:
    """Show one command: its state, the detail that came with it, deadline and history."""
    record = _tracking_call(store, lambda tracking: tracking.command(id))
    _output(record, as_json, lambda: _command_text(record))


@commands.command("ls")
@store_option
@click.option("--device", default=None, help="Only this device's commands.")
@click.option("--state", default=None, help="Only commands in this state (SUCCESSFUL, FAILED...).")
@click.option("--overdue", is_flag=True, help="Only commands past their deadline, not finished.")
@click.option("--limit", default=50, type=LIMIT)
@click.option("--after", default=None, help="Only commands whose id sorts after this one.")
@json_option
def commands_ls(store: str, device: str | None, state: str | None, overdue: bool, limit: int,
                after: str | None, as_json: bool) -> None:  # fmt: skip
    """List commands by id: id, state, last update, device."""
    records = _tracking_call(
        store,
        lambda t: t.commands(device=device, state=state, overdue=overdue, limit=limit, after=after),
    )
    _output(records, as_json, lambda: _command_lines(records) or ["no commands match"])


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
        yield f"  {name}: {value if isinstance(value, str) else _compact(value)}"
    yield "data:" + ("" if d.data else " -")
    for service, points in d.data.items():
        for name, p in points.items():
            yield f"  {service}.{name} = {_compact(p.value)}  (event {format_ts(p.event_ts)})"
    yield "shadow:" + ("" if view.shadow else " -")
    for s in view.shadow:
        sync = "synced" if s.synced else "PENDING" if s.pending else "NOT SYNCED"
        yield f"  {s.service_id}: {s.status or '-'}, {sync}  {_compact(s.properties)}"
    shown, total = len(view.commands), view.commands_total
    if shown < total:
        yield (
            f"commands: the {shown} most recently updated of {total}"
            f" (all: iotpush commands ls --device {d.device_id})"
        )
    else:
        yield "commands:" + ("" if view.commands else " -")
    yield from ("  " + line for line in _command_lines(view.commands))


@main.group()
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
    records = _tracking_call(
        store,
        lambda t: t.devices(status=status, include_deleted=deleted, limit=limit, after=after),
    )
    _output(records, as_json, lambda: [_device_line(r) for r in records] or ["no devices match"])


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
    view = _tracking_call(store, lambda tracking: tracking.device(id, commands=commands))
    _output(view, as_json, lambda: _device_text(view))


@main.group()
def trackers() -> None:
    """The tracker state derived from the kept notifications."""


@trackers.command("rebuild")
@store_option
@click.option("--batch", default=1000, type=click.IntRange(1, 100_000), help="Entries per step.")
def trackers_rebuild(store: str, batch: int) -> None:
    """Forget the tracker state and apply every kept notification again, in arrival order.

    Expectations the application registered (expected commands, desired properties) stay.
    """

    def progress(applied: int) -> None:
        click.echo(f"\rapplied {applied} notifications...", nl=False, err=True)

    count = _tracking_call(store, lambda t: t.rebuild(batch=batch, progress=progress))
    click.echo(err=True)
    click.echo(f"rebuilt the trackers from {count} notifications")


@main.group()
def db() -> None:
    """The store's schema: its version, and upgrading it (PostgreSQL needs this first)."""


@db.command("upgrade")
@store_option
def db_upgrade(store: str) -> None:
    """Create the schema, or apply the migrations it lacks (safe to run again)."""
    from .inbox import _migrations

    try:
        applied = _migrations.upgrade(store)
        latest = _migrations.status(store).latest
    except IotpushError as exc:
        raise click.ClickException(str(exc)) from exc
    for step in applied:
        click.echo(f"applied {step.version}: {step.description}")
    click.echo(f"{_migrations.shown(store)} is at schema version {latest}")


@db.command("status")
@store_option
def db_status(store: str) -> None:
    """Show the schema version and the migrations not applied yet; exit 1 when some are."""
    from .inbox import _migrations

    try:
        status = _migrations.status(store)
    except IotpushError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"schema version {status.current} of {status.latest} ({status.backend})")
    for step in status.pending:
        click.echo(f"pending {step.version}: {step.description}")
    if status.pending:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
