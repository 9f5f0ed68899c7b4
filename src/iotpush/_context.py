"""The delivery a handler is running for, visible to the code it calls."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .inbox import Entry
    from .models import Notification

__all__ = ["Delivery", "current_delivery", "current_entry"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A notification being delivered to handlers, with its inbox entry."""

    entry: Entry
    notification: Notification


_current: ContextVar[Delivery] = ContextVar("iotpush_delivery")


def current_delivery() -> Delivery:
    """The delivery the calling handler runs for.

    Raises:
        LookupError: Called outside a handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise LookupError("no notification is being delivered here (call from a handler)") from None


def current_entry() -> Entry:
    """The inbox entry the calling handler runs for (id, received_at, attempts...)."""
    return current_delivery().entry


def set_delivery(delivery: Delivery) -> None:
    """Make ``delivery`` current in this context (the dispatcher runs each call in a copy)."""
    _current.set(delivery)
