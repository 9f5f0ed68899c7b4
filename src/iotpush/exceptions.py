"""Errors raised by iotpush.

Every error derives from `IotpushError`, so one ``except IotpushError`` catches them all::

    IotpushError
    ├── NotificationError        a body is not a valid notification (carries the JSON path)
    ├── InboxError               the store failed
    │   └── InboxUnavailable     the inbox cannot persist now: answer 503, acknowledge nothing
    ├── EntryNotFound            no inbox entry, command, device... with that id
    ├── HandlerTimeout           a handler ran past its time limit
    ├── ReceiverLoadError        ``MODULE:ATTR`` does not name a receiver
    ├── SinkError                a sink could not publish now (the outbox keeps the entries)
    ├── RebuildRefused           a tracker rebuild would lose what purged notifications said
    └── ConfigError              an option has a value that cannot work
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ConfigError",
    "EntryNotFound",
    "HandlerTimeout",
    "InboxError",
    "InboxUnavailable",
    "IotpushError",
    "NotificationError",
    "RebuildRefused",
    "ReceiverLoadError",
    "SinkError",
]


class IotpushError(Exception):
    """Base class of every error iotpush raises."""


class NotificationError(IotpushError, ValueError):
    """A request body is not a valid notification.

    Attributes:
        reason: What is wrong, as a sentence fragment (``expected str, got null``).
        path: JSON path of the offending member (``$.result.resultCode``); ``$`` for the body.
        problem: ``malformed`` (not JSON, or not an object), ``unknown_type`` (a type no format
            knows) or ``invalid`` (a member is missing or wrong).
    """

    def __init__(
        self,
        reason: str,
        path: str = "$",
        *,
        problem: Literal["malformed", "invalid", "unknown_type"] = "invalid",
    ) -> None:
        super().__init__(f"{path}: {reason}" if path != "$" else reason)
        self.reason = reason
        self.path = path
        self.problem = problem


class InboxError(IotpushError):
    """The inbox's store failed."""


class InboxUnavailable(InboxError):
    """The inbox cannot persist right now (disk full, read-only, locked, I/O error)."""


class EntryNotFound(IotpushError, LookupError):
    """No record with the given id."""


class HandlerTimeout(IotpushError, TimeoutError):
    """A handler did not return within its time limit."""


class ReceiverLoadError(IotpushError, ImportError):
    """``MODULE:ATTR`` could not be imported or is not a receiver."""


class SinkError(IotpushError):
    """A sink could not publish now (destination unreachable or refusing); retried later."""


class RebuildRefused(IotpushError):
    """Rebuilding the trackers from the kept notifications would lose state: notifications
    they used were purged.

    Attributes:
        purged: What was purged (an `iotpush.inbox.Purged`).
    """

    def __init__(self, message: str, purged: object) -> None:
        super().__init__(message)
        self.purged = purged


class ConfigError(IotpushError, ValueError):
    """An option has a value that cannot work."""
