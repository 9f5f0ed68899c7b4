"""Putting the parts together: configuration, the app with its dispatcher, and running it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import importlib
import ipaddress
import logging
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from . import inbox as _inbox
from . import trackers
from ._context import current_entry
from ._jsonlimits import DEFAULT_MAX_DEPTH, DEFAULT_MAX_MEMBERS, DEFAULT_MAX_STRING
from ._slowclients import with_header_timeout
from .access import DEFAULT_TOLERANCE, IPAllowlist, PathToken, SignatureVerifier, parse_network
from .api import QueryAPI
from .app import DEFAULT_MAX_BODY, DEFAULT_PATH, DEFAULT_QUARANTINE_MAX_BODY, App
from .dispatch import Dispatcher
from .events import Events
from .exceptions import ConfigError, ReceiverLoadError
from .inbox import DEFAULT_DEDUPE_WINDOW, Inbox, Mode, StoreURL
from .models import Notification
from .projections import Projection
from .receiver import Receiver
from .sinks import Publisher, open_sink
from .tracking import Tracking

__all__ = [
    "PROJECTIONS",
    "Config",
    "create_app",
    "default_receiver",
    "load_receiver",
    "open_inbox",
    "run",
    "uvicorn_options",
]

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
        if self.trusted_proxies and not self.allow_ips:
            raise ConfigError("--trusted-proxy needs --allow-ip (it only serves the allowlist)")
        if not self.signature_tolerance > 0:
            raise ConfigError("--signature-tolerance must be above 0 seconds")
        if self.reuse_port and not StoreURL.parse(self.store).shared:
            # A SQLite file serves one process (its lock file says so): a second would not start.
            raise ConfigError("--reuse-port needs a shared store (--store postgresql://...)")
        _check_limits(self)
        _access_controls(self)


def _check_limits(config: Config) -> None:
    """Raise `ConfigError` for a limit that is negative, or zero where zero cannot mean off."""
    for option in ("max_depth", "max_members", "max_string", "quarantine_max_body"):
        if getattr(config, option) < 0:  # 0 turns these off
            raise ConfigError(f"--{option.replace('_', '-')} must be 0 (no bound) or more")
    for option in (
        "max_in_flight", "max_pending_writes", "body_timeout", "header_timeout",
        "limit_concurrency", "quarantine_max_rows",
    ):  # fmt: skip
        value = getattr(config, option)
        if value is not None and not value > 0:
            raise ConfigError(f"--{option.replace('_', '-')} must be above 0")
    if config.keep_alive_timeout < 1:
        raise ConfigError("--keep-alive-timeout must be at least 1 second")


def _access_controls(config: Config) -> dict[str, Any]:
    """The `App` arguments of the receive path's access controls that ``config`` turns on.

    Raises:
        ConfigError: A path token, network or signing secret is not valid (naming the option).
    """
    controls: dict[str, Any] = {}
    option = "--path-token"
    try:
        if config.path_token is not None:
            controls["path_token"] = PathToken(config.path_token)
        option = "--allow-ip"
        allowed = [parse_network(network) for network in config.allow_ips]
        option = "--trusted-proxy"
        proxies = [parse_network(network) for network in config.trusted_proxies]
        option = "--signing-secret"
        if config.signing_secrets:
            verifier = SignatureVerifier(config.signing_secrets, config.signature_tolerance)
            controls["signatures"] = verifier
    except ValueError as exc:  # the message names no secret
        raise ConfigError(f"{option}: {exc}") from None
    if allowed:
        controls["allowlist"] = IPAllowlist(allowed, proxies)
    return controls


def default_receiver() -> Receiver:
    """A receiver that writes each notification as one JSON line to standard output."""
    receiver = Receiver()
    encode = msgspec.json.encode

    @receiver.on()
    def log_notification(notification: Notification) -> None:
        entry = current_entry()
        line = {
            "id": entry.id,
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.received_at)),
            "type": entry.type,
            "device": entry.device,
            "body": notification.json,
        }
        sys.stdout.buffer.write(encode(line) + b"\n")
        sys.stdout.flush()

    return receiver


def load_receiver(spec: str) -> Receiver:
    """Import ``MODULE:ATTR``: a `Receiver`, a `Receiver` subclass, or a function returning one.

    The current directory is importable, as with ``uvicorn``.

    Raises:
        ReceiverLoadError: The module or attribute is missing, or is not a receiver.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ReceiverLoadError(f"expected MODULE:ATTR, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ReceiverLoadError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        obj: Any = getattr(module, attr)
    except AttributeError:
        raise ReceiverLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(obj) and not isinstance(obj, Receiver):  # a Receiver class or a factory
        obj = obj()
    if not isinstance(obj, Receiver):
        raise ReceiverLoadError(f"{spec} is not a Receiver, but {type(obj).__name__}")
    return obj


def open_inbox(url: str | StoreURL, **options: Any) -> Inbox:
    """Make the inbox a store URL names (see `iotpush.inbox.open_inbox` for the URLs and
    options), with the trackers (`PROJECTIONS`) wired in unless ``projections`` says otherwise.

    Raises:
        ConfigError: The URL's scheme is not supported, or an option is not.
    """
    options.setdefault("projections", PROJECTIONS)
    return _inbox.open_inbox(url, **options)


def open_store(
    config: Config, *, exclusive: bool = False, outbox: Sequence[str] = (), mode: Mode = "create"
) -> Inbox:
    """The inbox ``config.store`` names, with the config's options (``outbox``: sink names).

    ``exclusive``: the server's inbox (SQLite: its lock file; bounded against floods, where
    operator commands are not). ``mode``: may it create the store, write it, or only read it.
    """
    store = StoreURL.parse(config.store)
    options: dict[str, Any] = {"dedupe_window": config.dedupe_window, "mode": mode}
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


def create_app(config: Config | None = None, **changes: Any) -> App:
    """Build the receiver app: inbox, dispatcher and handlers, started by the ASGI lifespan."""
    config = (config or Config()).replace(**changes)
    config.check()
    receiver = config.receiver
    if receiver is None:
        receiver = default_receiver()
    elif isinstance(receiver, str):
        receiver = load_receiver(receiver)
    sinks = [open_sink(url) for url in config.sinks]
    if len({sink.name for sink in sinks}) < len(sinks):
        raise ConfigError("two sinks publish to the same stream: give each its own ?stream=")
    inbox = open_store(config, exclusive=True, outbox=[sink.name for sink in sinks])
    publishers = [Publisher(inbox, sink) for sink in sinks]
    dispatcher = Dispatcher(
        inbox,
        receiver,
        concurrency=config.concurrency,
        max_attempts=config.max_attempts,
        backoff=config.backoff,
        handler_timeout=config.handler_timeout,
        lease=config.lease,
    )
    tracking = Tracking(inbox)
    events = Events()
    console = None
    if config.console:
        from .console import Console

        tokens = config.console_tokens or config.api_tokens
        console = Console(inbox, tracking, events, tokens=tokens)
    watchdog: list[asyncio.Task[None]] = []

    async def start_watchdog() -> None:
        watchdog.append(asyncio.create_task(tracking.watch(interval=config.watch_interval)))

    async def stop_watchdog() -> None:
        for task in watchdog:
            task.cancel()
        await asyncio.gather(*watchdog, return_exceptions=True)

    app = App(
        inbox,
        path=config.path,
        command_path=config.command_path,
        max_body=config.max_body,
        on_startup=[dispatcher.start, start_watchdog, *(p.start for p in publishers)],
        on_shutdown=[*(p.stop for p in publishers), stop_watchdog, dispatcher.stop],
        api_tokens=config.api_tokens,
        # Behind a trusted proxy the peer is the proxy, often on loopback; the clients are not.
        api_needs_token=not config.loopback or bool(config.trusted_proxies),
        api=QueryAPI(tracking),
        console=console,
        events=events,
        max_depth=config.max_depth,
        max_members=config.max_members,
        max_string=config.max_string,
        max_in_flight=config.max_in_flight,
        body_timeout=config.body_timeout,
        quarantine_max_body=config.quarantine_max_body,
        **_access_controls(config),
    )
    app.state.update(
        dispatcher=dispatcher, tracking=tracking, publishers=publishers, events=events,
        console=console,
    )  # fmt: skip
    return app


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
    from uvicorn.config import LOGGING_CONFIG

    config.check()
    check_store(config)  # one clear line before anything starts
    app = create_app(config)
    # iotpush's own messages go where uvicorn's go, in the same format.
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["iotpush"] = {"handlers": ["default"], "level": config.log_level.upper()}
    if config.path_token and config.access_log:  # the token is a secret: never in the log
        log_config.setdefault("filters", {})["mask_paths"] = {
            "()": _MaskPaths, "mask": app.loggable_path
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
