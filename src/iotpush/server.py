"""Putting the parts together: configuration, the app with its dispatcher, and running it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import inbox as _inbox
from . import trackers
from ._asgi import ASGIApp, Receive, Scope, Send
from ._jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS, DEFAULT_MAX_STRING
from ._slowclients import with_header_timeout
from ._startup import log_summary
from ._when import format_duration
from .access import (
    DEFAULT_TOLERANCE,
    AccessControl,
    IPAllowlist,
    Network,
    PathToken,
    SignatureVerifier,
    parse_network,
)
from .alerts import Alerts
from .api import QueryAPI
from .app import (
    DEFAULT_MAX_BODY,
    DEFAULT_PATH,
    DEFAULT_QUARANTINE_MAX_BODY,
    DEFAULT_V5_PATH,
    App,
    Guard,
    Mount,
    NotFound,
    health,
    legacy_routes,
    v5_routes,
)
from .auth import BearerAuth
from .dispatch import Dispatcher
from .events import Events
from .exceptions import ConfigError
from .formats import PushRoute
from .health import DEFAULT_MAX_BACKLOG, Health
from .inbox import DEFAULT_DEDUPE_WINDOW, Inbox, Mode, StoreURL
from .logs import LogFormat, ensure_handler, uvicorn_log_config
from .metrics import Metrics
from .models import Notification
from .overview import OverviewReader, read_backlog
from .probes import Probes
from .projections import Projection
from .receive import Limits
from .receiver import Receiver, default_receiver, load_receiver
from .retention import (
    DEFAULT_FINISHED_RETENTION,
    DEFAULT_PURGE_INTERVAL,
    DEFAULT_RETENTION,
    Retention,
)
from .sinks import Publisher, open_sink
from .tracking import Tracking

__all__ = [
    "PROJECTIONS",
    "Config",
    "Server",
    "create_app",
    "default_receiver",
    "load_receiver",
    "open_inbox",
    "run",
    "uvicorn_options",
]

T = TypeVar("T")

DEFAULT_STORE = "sqlite:///iotpush.db"

PROJECTIONS: tuple[Projection, ...] = trackers.PROJECTIONS
"""What every inbox opened here applies to new entries in their transaction: the trackers."""


@dataclass(frozen=True)
class Config:
    """Everything `run` needs; the CLI fills it from options and ``IOTPUSH_*`` variables."""

    receiver: Receiver | str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    store: str = DEFAULT_STORE
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    path: str = DEFAULT_PATH
    command_path: str | None = None
    v5_path: str = DEFAULT_V5_PATH
    max_body: int = DEFAULT_MAX_BODY
    dedupe_window: float = DEFAULT_DEDUPE_WINDOW
    concurrency: int = 32
    max_attempts: int = 8
    backoff: float = 1.0
    handler_timeout: float = 60.0
    lease: float = 60.0
    """Seconds a claim lasts unrenewed: another server takes over a dead one's work after it."""
    busy_timeout: float = 5.0
    db_timeout: float = 5.0
    """Seconds a PostgreSQL operation may take before the push is answered 503."""
    watch_interval: float = 5.0
    retention: float | None = DEFAULT_RETENTION
    """Seconds delivered entries and tracker histories are kept (None: forever)."""
    finished_retention: float | None = DEFAULT_FINISHED_RETENTION
    """Seconds a finished record is kept after it was last heard of (None: forever); not less
    than ``retention``. Purged with the rest (only while ``retention`` is on)."""
    purge_interval: float = DEFAULT_PURGE_INTERVAL
    """Seconds between two purges of what is older than ``retention``."""
    sinks: tuple[str, ...] = ()
    """Where every kept notification is also published (``nats://HOST:PORT?stream=...``)."""
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: Literal["none", "optional", "required"] = "none"
    api_tokens: tuple[str, ...] = ()
    console: bool = True
    """Serve the web console at ``/ui/``."""
    console_tokens: tuple[str, ...] = ()
    """Tokens that log in to the console (default: the API tokens)."""
    path_token: str | None = None
    allow_ips: tuple[str, ...] = ()
    """Clients allowed on every path (none: any); ``api_allow_ips`` replaces it for the API."""
    api_allow_ips: tuple[str, ...] = ()
    """Clients allowed on ``/api/`` and ``/openapi.json`` (none: those of ``allow_ips``)."""
    trusted_proxies: tuple[str, ...] = ()
    signing_secrets: tuple[str, ...] = ()
    signature_tolerance: float = DEFAULT_TOLERANCE
    log_level: str = "info"
    access_log: bool = False
    max_depth: int = DEFAULT_MAX_DEPTH
    max_members: int = DEFAULT_MAX_MEMBERS
    max_string: int = DEFAULT_MAX_STRING
    max_in_flight: int | None = 1000
    max_pending_writes: int | None = 10_000
    body_timeout: float | None = 30.0
    header_timeout: float | None = 30.0
    keep_alive_timeout: int = 5
    limit_concurrency: int | None = None
    quarantine_max_rows: int | None = 100_000
    quarantine_max_body: int = DEFAULT_QUARANTINE_MAX_BODY
    reuse_port: bool = False
    log_format: LogFormat = "text"
    metrics: bool = True
    """Serve ``/metrics`` (the other probes are always served)."""
    ready_max_backlog: int = DEFAULT_MAX_BACKLOG
    """The most entries a sink's outbox may hold for ``/health/ready`` to say ready."""
    alert_failures_in_a_row: int = 3
    """Failed answers in a row that make an ERROR line (the platform gives up after 10)."""
    alert_no_push_for: float | None = None
    """Seconds without a push that make a warning (None: never)."""

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @property
    def loopback(self) -> bool:
        """Whether the server listens on a loopback address only."""
        host = self.host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def check(self) -> None:
        """Raise `ConfigError` for options that cannot work together."""
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile")
        if self.ssl_cert_reqs != "none" and not self.ssl_ca_certs:
            raise ConfigError(f"--ssl-cert-reqs {self.ssl_cert_reqs} needs --ssl-ca-certs")
        if self.ssl_ca_certs and not self.ssl_certfile:
            raise ConfigError("--ssl-ca-certs needs --ssl-certfile (client certificates need TLS)")
        if any(len(token) < 16 for token in self.api_tokens):
            raise ConfigError("--api-token: a token must have at least 16 characters")
        if any(len(token) < 16 for token in self.console_tokens):
            raise ConfigError("--console-token: a token must have at least 16 characters")
        if self.trusted_proxies and not (self.allow_ips or self.api_allow_ips):
            raise ConfigError("--trusted-proxy needs --allow-ip (it only serves the allowlist)")
        if not self.signature_tolerance > 0:
            raise ConfigError("--signature-tolerance must be above 0 seconds")
        if self.reuse_port and not StoreURL.parse(self.store).shared:
            # A SQLite file serves one process (its lock file says so): a second would not start.
            raise ConfigError("--reuse-port needs a shared store (--store postgresql://...)")
        if self.ready_max_backlog < 0 or self.alert_failures_in_a_row < 0:
            option = (
                "ready-max-backlog" if self.ready_max_backlog < 0 else "alert-failures-in-a-row"
            )
            raise ConfigError(f"--{option} must be 0 or more")
        if self.alert_no_push_for is not None and not self.alert_no_push_for > 0:
            raise ConfigError("--alert-no-push-for must be above 0 seconds")
        _check_limits(self)
        _access_controls(self)


def _check_limits(config: Config) -> None:
    """Raise `ConfigError` for a limit that is negative, or zero where zero cannot mean off."""
    for option in ("max_depth", "max_members", "max_string", "quarantine_max_body"):
        if getattr(config, option) < 0:  # 0 turns these off
            raise ConfigError(f"--{option.replace('_', '-')} must be 0 (no bound) or more")
    for option in (
        "max_in_flight", "max_pending_writes", "body_timeout", "header_timeout",
        "limit_concurrency", "quarantine_max_rows", "retention", "finished_retention",
    ):  # fmt: skip
        value = getattr(config, option)
        if value is not None and not value > 0:
            raise ConfigError(f"--{option.replace('_', '-')} must be above 0")
    finished, kept = config.finished_retention, config.retention
    if finished is not None and kept is not None and finished < kept:
        raise ConfigError(
            f"--finished-retention ({format_duration(finished)}) must not be shorter than"
            f" --retention ({format_duration(kept)}); 0 keeps finished records"
        )
    if not config.purge_interval > 0:
        raise ConfigError("--purge-interval must be above 0")
    if config.keep_alive_timeout < 1:
        raise ConfigError("--keep-alive-timeout must be at least 1 second")


@dataclass(frozen=True)
class _Controls:
    """The access controls ``config`` turns on."""

    path_token: PathToken | None
    allowlist: IPAllowlist | None
    api_allowlist: IPAllowlist | None
    signatures: SignatureVerifier | None

    @property
    def receive(self) -> list[AccessControl]:
        """The receive paths' controls, in the order they are checked."""
        return [c for c in (self.path_token, self.allowlist, self.signatures) if c is not None]


def _option(option: str, build: Callable[[], T]) -> T:
    """``build()``, its `ConfigError` naming ``option``."""
    try:
        return build()
    except ConfigError as exc:  # the message names no secret
        raise ConfigError(f"{option}: {exc}") from None


def _networks(option: str, values: Sequence[str]) -> list[Network]:
    return _option(option, lambda: [parse_network(value) for value in values])


def _access_controls(config: Config) -> _Controls:
    """The access controls ``config`` turns on.

    Raises:
        ConfigError: A path token, network or signing secret is not valid (naming the option).
    """
    token = config.path_token
    path_token = None if token is None else _option("--path-token", lambda: PathToken(token))
    allowed = _option("--allow-ip", lambda: [parse_network(n) for n in config.allow_ips])
    api_allowed = _option(
        "--api-allow-ip", lambda: [parse_network(n) for n in config.api_allow_ips]
    )
    proxies = _option("--trusted-proxy", lambda: [parse_network(n) for n in config.trusted_proxies])
    signatures = None
    if config.signing_secrets:
        secrets, tolerance = config.signing_secrets, config.signature_tolerance
        signatures = _option("--signing-secret", lambda: SignatureVerifier(secrets, tolerance))
    allowlist = IPAllowlist(allowed, proxies) if allowed else None
    api_allowlist = IPAllowlist(api_allowed, proxies) if api_allowed else allowlist
    return _Controls(path_token, allowlist, api_allowlist, signatures)


def _guarded(app: ASGIApp, allowlist: IPAllowlist | None, events: Events) -> ASGIApp:
    return app if allowlist is None else Guard(app, [allowlist], events)


def open_inbox(url: str | StoreURL, **options: Any) -> Inbox:
    """Make the inbox a store URL names (see `iotpush.inbox.open_inbox` for the URLs and
    options), with the trackers (`PROJECTIONS`) wired in unless ``projections`` says otherwise.

    Raises:
        ConfigError: The URL's scheme is not supported, or an option is not.
    """
    options.setdefault("projections", PROJECTIONS)
    return _inbox.open_inbox(url, **options)


def open_store(
    config: Config,
    *,
    exclusive: bool = False,
    outbox: Sequence[str] = (),
    mode: Mode = "create",
    events: Events | None = None,
) -> Inbox:
    """The inbox ``config.store`` names, with the config's options (``outbox``: sink names;
    ``events``: where its write path's events go).

    ``exclusive``: the server's inbox (SQLite: its lock file; bounded against floods, where
    operator commands are not). ``mode``: may it create the store, write it, or only read it.
    """
    store = StoreURL.parse(config.store)
    options: dict[str, Any] = {"dedupe_window": config.dedupe_window, "mode": mode}
    if events is not None:
        options["events"] = events
    if outbox:
        options["outbox"] = tuple(outbox)
    if store.scheme == "sqlite":
        options.update(synchronous=config.synchronous, exclusive=exclusive)
    if store.durable:
        options.update(busy_timeout=config.busy_timeout)
    if exclusive:
        options.update(quarantine_max_rows=config.quarantine_max_rows)
        if store.durable:
            options.update(max_pending=config.max_pending_writes)
        if store.scheme == "postgres":  # bound every wait
            options.update(db_timeout=config.db_timeout)
    return open_inbox(store, **options)


def check_store(config: Config) -> None:
    """Open the server's store and close it again: a store that cannot serve (another server's
    lock, a read-only filesystem, a file that is not a database, a schema to upgrade) is
    refused with one line before anything starts. A full disk is no reason: the server starts
    and answers 503 until the store can be written.

    Raises:
        IotpushError: The store cannot serve (the message names it and the cause).
    """

    async def check() -> None:
        async with open_store(config, exclusive=True):
            pass

    asyncio.run(check())


@dataclass(frozen=True, eq=False)
class Server:
    """What `create_app` assembles: the ASGI app and the parts it drives.

    It is itself the ASGI application (it calls `app`), so that uvicorn, `iotpush.testing` or any
    ASGI server serves it as it is.
    """

    app: App
    inbox: Inbox
    dispatcher: Dispatcher
    tracking: Tracking
    publishers: list[Publisher]
    events: Events
    """Where every part's events go: subscribe metrics, logs, tests to it."""
    console: ASGIApp | None = None
    """The web console served at ``/ui/`` (None: turned off)."""
    metrics: Metrics | None = None
    """What ``/metrics`` serves (None: turned off)."""
    health: Health | None = None
    """The checks of ``/health/live`` and ``/health/ready``."""
    alerts: Alerts | None = None
    """The warnings in the log (failures in a row, silence, dead letters)."""
    overview: OverviewReader | None = None
    """The store's figures, cached for a second (the gauges, readiness, the summary)."""
    retention: Retention | None = None
    """Purges what is older than ``--retention`` every ``--purge-interval`` (None: off)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    @property
    def state(self) -> dict[str, Any]:
        """The parts by name (``state["dispatcher"]``), as earlier versions offered them."""
        return {
            "inbox": self.inbox, "dispatcher": self.dispatcher, "tracking": self.tracking,
            "publishers": self.publishers, "events": self.events, "console": self.console,
            "metrics": self.metrics, "health": self.health, "alerts": self.alerts,
            "overview": self.overview, "retention": self.retention,
        }  # fmt: skip


def create_app(config: Config | None = None, **changes: Any) -> Server:
    """Build the receiver: inbox, app, dispatcher and handlers, started by the ASGI lifespan."""
    config = (config or Config()).replace(**changes)
    config.check()
    controls = _access_controls(config)
    receiver = config.receiver
    if receiver is None:
        receiver = default_receiver()
    elif isinstance(receiver, str):
        receiver = load_receiver(receiver)
    sinks = [open_sink(url) for url in config.sinks]
    if len({sink.name for sink in sinks}) < len(sinks):
        raise ConfigError("two sinks publish to the same stream: give each its own ?stream=")
    events = Events()
    inbox = open_store(config, exclusive=True, outbox=[sink.name for sink in sinks], events=events)
    publishers = [Publisher(inbox, sink, events=events) for sink in sinks]
    dispatcher = Dispatcher(
        inbox,
        receiver,
        concurrency=config.concurrency,
        max_attempts=config.max_attempts,
        backoff=config.backoff,
        handler_timeout=config.handler_timeout,
        lease=config.lease,
        events=events,
    )
    tracking = Tracking(inbox)
    console = None
    if config.console:
        from .console import Console

        tokens = config.console_tokens or config.api_tokens
        console = Console(inbox, tracking, events, tokens=tokens)
    overview = OverviewReader(inbox)
    metrics = Metrics(events, overview, sinks=tuple(inbox.outbox)) if config.metrics else None
    checks = Health(
        overview, events, dispatcher=dispatcher, publishers=publishers,
        max_backlog=config.ready_max_backlog,
    )  # fmt: skip
    alerts = Alerts(
        events,
        failures_in_a_row=config.alert_failures_in_a_row,
        no_push_for=config.alert_no_push_for,
    )
    loaded: Receiver = receiver

    async def start_logging() -> None:
        # After the server configured logging: iotpush's lines must never go out bare.
        ensure_handler(config.log_format)
        try:
            view = await read_backlog(inbox)  # not `overview`: its first reading counts every row
        except Exception as exc:  # noqa: BLE001 - the summary says it could not read
            logging.getLogger("iotpush").warning("cannot read the store's figures: %s", exc)
            view = None
        log_summary(config, loaded, view)

    watchdog: list[asyncio.Task[None]] = []

    async def start_watchdog() -> None:
        watchdog.append(asyncio.create_task(tracking.watch(interval=config.watch_interval)))

    async def stop_watchdog() -> None:
        for task in watchdog:
            task.cancel()
        await asyncio.gather(*watchdog, return_exceptions=True)

    retention = None
    if config.retention is not None:
        retention = Retention(
            inbox, trackers.HISTORIES, keep=config.retention, finished=trackers.FINISHED,
            finished_keep=config.finished_retention, interval=config.purge_interval,
            clock=inbox.clock, events=events,
        )  # fmt: skip
    api = QueryAPI(tracking)
    # Behind a trusted proxy the peer is the proxy, often on loopback; the clients are not.
    required = not config.loopback or bool(config.trusted_proxies)
    authenticated = BearerAuth(api, config.api_tokens, required=required, events=events)
    probes = Probes(checks, metrics)
    mounts = [
        Mount("/openapi.json", _guarded(api, controls.api_allowlist, events), exact=True),
        Mount("/api/", _guarded(authenticated, controls.api_allowlist, events)),
        Mount("/health", _guarded(health, controls.allowlist, events), exact=True),
        Mount("/health/", _guarded(probes, controls.allowlist, events)),
    ]
    if metrics is not None:  # the query API's access rules
        scrape = BearerAuth(probes, config.api_tokens, required=required, what="/metrics",
                            events=events)  # fmt: skip
        mounts.append(Mount("/metrics", _guarded(scrape, controls.api_allowlist, events), True))
    if console is not None:  # it checks its own logins
        guarded_console = _guarded(console, controls.allowlist, events)
        mounts += [Mount("/ui", guarded_console, exact=True), Mount("/ui/", guarded_console)]
    limits = Limits(
        max_body=config.max_body,
        max_depth=config.max_depth,
        max_members=config.max_members,
        max_string=config.max_string,
        max_in_flight=config.max_in_flight,
        body_timeout=config.body_timeout,
        quarantine_max_body=config.quarantine_max_body,
    )
    routes = [*legacy_routes(config.path, config.command_path), *v5_routes(config.v5_path)]
    app = App(
        inbox,
        routes=routes,
        limits=limits,
        access=controls.receive,
        mounts=mounts,
        fallback=_guarded(NotFound(events), controls.allowlist, events),
        on_startup=[
            dispatcher.start,
            start_watchdog,
            *([] if retention is None else [retention.start]),
            alerts.start,
            *(p.start for p in publishers),
            start_logging,  # the summary counts what the last run left (claimed: undelivered)
        ],
        on_shutdown=[
            *(p.stop for p in publishers),
            alerts.stop,
            stop_watchdog,
            *([] if retention is None else [retention.stop]),
            dispatcher.stop,
        ],
        events=events,
    )
    if console is not None:
        console.retry = _quarantine_replay(inbox, routes, limits)
    return Server(
        app, inbox, dispatcher, tracking, publishers, events, console, metrics, checks, alerts,
        overview, retention,
    )  # fmt: skip


def _quarantine_replay(
    inbox: Inbox, routes: Sequence[PushRoute], limits: Limits
) -> Callable[[int], Awaitable[str]]:
    """The console's Retry: a quarantined body through this server's decoders and bounds."""
    from ._jsonlimits import JSONLimits
    from .exceptions import NotificationError
    from .quarantine import replay_quarantined

    by_path = {route.path: route for route in routes}
    bounds = JSONLimits(limits.max_depth, limits.max_members, limits.max_string)

    def decode_for(path: str, body: bytes) -> Notification:
        route = by_path.get(path) or by_path.get(path.rstrip("/"))
        if route is None:
            raise NotificationError(f"{path} is not a receive path of this server")
        return route.format.decode(body, route.kind)

    async def retry(id: int) -> str:
        replayed = await replay_quarantined(
            inbox, id, decode_for, max_body=limits.max_body,
            limits=bounds if bounds.active else None, kept_max_body=limits.quarantine_max_body,
        )  # fmt: skip
        return str(replayed)

    return retry


def uvicorn_options(config: Config) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.Config`` that serve ``config`` (but the app)."""
    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "loop": "auto",
        "http": "auto",
        "lifespan": "on",
        "log_level": config.log_level,
        "access_log": config.access_log,
        "timeout_graceful_shutdown": 15,
        # iotpush reads X-Forwarded-For itself, from --trusted-proxy peers only: uvicorn must not
        # rewrite the peer address first (by default it believes the header from 127.0.0.1).
        "proxy_headers": False,
        "timeout_keep_alive": config.keep_alive_timeout,
        "limit_concurrency": config.limit_concurrency,
    }
    if config.header_timeout is not None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        options["http"] = with_header_timeout(AutoHTTPProtocol, config.header_timeout)
    if config.ssl_certfile:
        # The platform is the TLS client and verifies this certificate (the operator uploads
        # its CA to the platform); a gateway in front may also present a client certificate.
        options.update(
            ssl_certfile=config.ssl_certfile,
            ssl_keyfile=config.ssl_keyfile,
            ssl_ca_certs=config.ssl_ca_certs,
            ssl_cert_reqs=_CERT_REQS[config.ssl_cert_reqs],
        )
    return options


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def run(config: Config) -> None:
    """Serve ``config`` with uvicorn (uvloop and httptools where installed) until SIGINT/SIGTERM."""
    import uvicorn

    config.check()
    check_store(config)  # one clear line before anything starts
    app = create_app(config)
    # iotpush's own lines and uvicorn's alike: an ISO 8601 time and a level, or JSON.
    log_config = uvicorn_log_config(config.log_format, config.log_level)
    if config.path_token and config.access_log:  # the token is a secret: never in the log
        log_config.setdefault("filters", {})["mask_paths"] = {
            "()": _MaskPaths, "mask": app.app.loggable_path
        }  # fmt: skip
        log_config["loggers"]["uvicorn.access"]["filters"] = ["mask_paths"]
    if not config.reuse_port:
        uvicorn.run(app, log_config=log_config, **uvicorn_options(config))
        return
    # As uvicorn.run, but on a socket other servers share.
    server = uvicorn.Server(uvicorn.Config(app, log_config=log_config, **uvicorn_options(config)))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[_shared_socket(config.host, config.port)])
    if not server.started:
        sys.exit(3)  # uvicorn's exit status for a failed startup


class _MaskPaths(logging.Filter):
    """Rewrites the path of uvicorn's access log records (``%s - "%s %s HTTP/%s" %d``)."""

    def __init__(self, mask: Callable[[str], str]) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], self.mask(args[2]), *args[3:])
        return True


def _shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` that other processes may bind too (``SO_REUSEPORT``):
    the kernel spreads new connections over every process listening on it.

    Raises:
        ConfigError: The address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
