"""Idempotency keys: how a retried or duplicated push is recognised.

The platform sends no delivery id, so each notification gets a deterministic ``key`` from what
it says, and a ``slot``: the inbox keeps one live key per slot, and a push is a duplicate when
its slot's live key equals its own and is younger than the dedupe window.

Events that name themselves use the key as the slot: the same event twice within the window is a
duplicate. State changes that carry no time use one slot per thing whose state it is, so only a
repeat of the *latest* state is a duplicate: ONLINE, OFFLINE, ONLINE delivers all three, ONLINE,
ONLINE delivers one. Each type's rule is in its format's registry (`TypeSpec.key`; the legacy
types' in `iotpush.formats.legacy.keys`).
"""

from __future__ import annotations

from .formats import FORMATS, digest
from .models import Notification

__all__ = ["digest", "key_and_slot", "slot_order"]


def key_and_slot(notification: Notification) -> tuple[str, str]:
    """The idempotency key of ``notification`` and the dedupe slot it occupies.

    Keys start with the ``notifyType``, so keys of different types never meet; state slots are
    shared by the types that change the same state (``deviceAdded`` ... ``deviceDeleted``).
    """
    return FORMATS.key_and_slot(notification)


def slot_order(notification: Notification) -> float | None:
    """The time (seconds since the epoch) the idempotency key of ``notification`` names, for
    the types whose key is its own slot and carries an event time; else None.

    A retry repeats the key and so this time: the SQLite inbox orders the dedupe index by it, so
    that new slots land on the index's last pages (see `iotpush.inbox.Incoming.order`).
    """
    return FORMATS.slot_order(notification)
