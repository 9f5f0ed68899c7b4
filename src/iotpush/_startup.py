"""The start-up summary: what this server serves, how, and what the last run left behind."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ._when import format_duration
from .models import NOTIFICATION_TYPES
from .overview import Backlog

if TYPE_CHECKING:
    from .receiver import Receiver
    from .server import Config

__all__ = ["log_summary", "redact_url", "shown_store", "summary"]

log = logging.getLogger("iotpush")


def shown_store(url: str) -> str:
    """``url`` as a log may show it: without a password; a SQLite file as an absolute path."""
    if url.startswith("memory:"):
        return url
    if url.startswith("sqlite:") or "://" not in url:
        path = url.removeprefix("sqlite://").removeprefix("/") if "://" in url else url
        return f"sqlite:///{Path(path).resolve()}"
    return redact_url(url)


def redact_url(url: str) -> str:
    """``url`` with its password, if it has one, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _handlers(receiver: Receiver) -> str:
    by_type = {kind: receiver.handlers_for(kind) for kind in NOTIFICATION_TYPES}
    everywhere = [
        h for h in next(iter(by_type.values())) if all(h in hs for hs in by_type.values())
    ]
    parts = [
        f"{kind}: {', '.join(h.name for h in handlers if h not in everywhere)}"
        for kind, handlers in by_type.items()
        if any(h not in everywhere for h in handlers)
    ]
    if everywhere:
        parts.append(f"every type: {', '.join(h.name for h in everywhere)}")
    return "; ".join(parts) or "none (notifications are kept and tracked, not delivered)"


def _controls(config: Config) -> str:
    on = []
    if config.ssl_certfile:
        on.append("HTTPS" + (f" (client certificates {config.ssl_cert_reqs})"
                             if config.ssl_cert_reqs != "none" else ""))  # fmt: skip
    if config.path_token:
        on.append("path token")
    if config.allow_ips:
        on.append(f"IP allowlist ({len(config.allow_ips)})")
    if config.signing_secrets:
        on.append(f"signatures ({len(config.signing_secrets)} secret(s))")
    if config.api_tokens:
        on.append("query API token")
    elif not config.loopback:
        on.append("query API refused (no --api-token off loopback)")
    return ", ".join(on) or "none"


def _left(view: Backlog) -> str:
    undelivered = view.entries.get("pending", 0) + view.entries.get("claimed", 0)
    parts = [f"{undelivered} undelivered", f"{view.entries.get('dead', 0)} dead"]
    parts += [f"{count} unpublished ({sink})" for sink, count in view.unpublished.items()]
    return ", ".join(parts)


def summary(config: Config, receiver: Receiver, view: Backlog | None) -> list[str]:
    """The lines of the start-up summary (``view``: what waits in the store, None if unreadable;
    `overview.read_backlog`, whose cost does not grow with the entries delivered)."""
    from . import __version__

    command_path = config.command_path or config.path.rstrip("/") + "/cmd"
    paths = f"{config.path}, {command_path} (legacy) and {config.v5_path} (v5)"
    lines = [
        f"iotpush {__version__} (Python {sys.version.split()[0]}, pid {os.getpid()})",
        f"store: {shown_store(config.store)}"
        + (f" (synchronous={config.synchronous})" if "sqlite" in shown_store(config.store) else ""),
        f"receiving on {paths}" + (" under the path token" if config.path_token else ""),
        f"handlers: {_handlers(receiver)}",
        f"controls: {_controls(config)}",
        f"limits: body {config.max_body} bytes, depth {config.max_depth}, members"
        f" {config.max_members}, string {config.max_string}, in flight {config.max_in_flight},"
        f" body timeout {config.body_timeout} s",
        "sinks: " + (", ".join(map(redact_url, config.sinks)) if config.sinks else "none"),
        "retention: "
        + (
            f"{format_duration(config.retention)}, finished records "
            + (
                "kept"
                if config.finished_retention is None
                else format_duration(config.finished_retention)
            )
            + f", purged every {format_duration(config.purge_interval)}"
            if config.retention is not None
            else "off (everything is kept)"
        ),
        f"monitoring: /metrics, /health/live, /health/ready; alerts after"
        f" {config.alert_failures_in_a_row} failed answers in a row"
        + (
            f", after {config.alert_no_push_for:g} s without a push"
            if config.alert_no_push_for
            else ""
        ),
    ]
    if view is None:
        lines.append("left from the last run: unknown (the store could not be read)")
    else:
        lines.append(f"left from the last run: {_left(view)}")
    return lines


def log_summary(config: Config, receiver: Receiver, view: Backlog | None) -> None:
    """Log `summary`, one INFO line each."""
    for line in summary(config, receiver, view):
        log.info("%s", line)
