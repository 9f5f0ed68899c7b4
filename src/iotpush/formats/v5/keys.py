"""Idempotency keys of v5 pushes (see `iotpush.idempotency` for what a key and a slot are).

A push with a ``request_id`` is keyed by it, with its pair: the same pair and id twice within
the dedupe window is one push. Without one, each pair derives its key as the legacy table does:

==============================  ================================================  ==============
pair                            key (after the pair)                              slot
==============================  ================================================  ==============
device.property:report,         device, event time, hash of the services          the key
device.data:update
device.message:report           device, message id, event time, body hash         the key
device.message.status:update    device, message id, status, status time           the key
device.command.status:update    command id, status                                the key
device.status:update            hash of the body                                  its status
device:create/update/delete     hash of the body                                  its record
batchtask:update                hash of the body                                  the task
product:create/update/delete    hash of the body                                  the product
==============================  ================================================  ==============

State changes (the last four rows) share one slot per thing, so only a repeat of its *latest*
state is a duplicate. Slots start with ``v5-`` and keys with the pair, so they never meet the
legacy ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final

import msgspec

from . import models as m

__all__ = ["key_and_slot", "rule"]


def _instant(value: object) -> float:
    # Hashes only need a time to be the same instant each time: its timestamp is the cheapest.
    if isinstance(value, m.Time):
        return value.timestamp()
    raise NotImplementedError(f"cannot hash {type(value).__name__}")


_encode = msgspec.json.Encoder(enc_hook=_instant, order="sorted").encode


def _digest(value: Any) -> str:
    return hashlib.blake2b(_encode(value), digest_size=8).hexdigest()


def _stamp(n: m.V5Notification[Any]) -> str:
    time = n.time
    return "" if time is None else f"{time.timestamp():.3f}"


def _properties(n: m.V5Notification[m.PropertiesBody]) -> tuple[str, None]:
    return f"{n.device}:{_stamp(n)}:{_digest(n.body.services)}", None


def _message(n: m.DeviceMessageReport) -> tuple[str, None]:
    b = n.body
    return f"{n.device}:{b.id or ''}:{_stamp(n)}:{_digest(b)}", None


def _message_status(n: m.DeviceMessageStatusUpdate) -> tuple[str, None]:
    b = n.body
    at = "" if b.timestamp is None else f"{b.timestamp.timestamp():.3f}"
    return f"{n.device}:{b.message_id}:{b.status.upper()}:{at or _stamp(n)}", None


def _command_status(n: m.DeviceCommandStatusUpdate) -> tuple[str, None]:
    return f"{n.body.command_id}:{n.body.status.upper()}", None


def _status(n: m.DeviceStatusUpdate) -> tuple[str, str]:
    return _digest(n.body), f"v5-status:{n.device}"


def _device(n: m.V5Notification[m.DeviceBody]) -> tuple[str, str]:
    return _digest(n.body), f"v5-device:{n.device}"


def _task(n: m.BatchTaskUpdate) -> tuple[str, str]:
    return _digest(n.body), f"v5-task:{n.body.task_id}"


def _product(n: m.V5Notification[m.ProductBody]) -> tuple[str, str]:
    return _digest(n.body), f"v5-product:{n.body.product_id or n.header.product_id}"


_RULES: Final[dict[type[m.V5Notification[Any]], Callable[[Any], tuple[str, str | None]]]] = {
    m.DevicePropertyReport: _properties,
    m.DeviceDataUpdate: _properties,
    m.DeviceMessageReport: _message,
    m.DeviceMessageStatusUpdate: _message_status,
    m.DeviceCommandStatusUpdate: _command_status,
    m.DeviceStatusUpdate: _status,
    m.DeviceCreate: _device,
    m.DeviceUpdate: _device,
    m.DeviceDelete: _device,
    m.BatchTaskUpdate: _task,
    m.ProductCreate: _product,
    m.ProductUpdate: _product,
    m.ProductDelete: _product,
}
assert set(_RULES) == set(m.PAIRS.values()), "every pair needs a key rule"


def rule(cls: type[m.V5Notification[Any]]) -> Callable[[Any], tuple[str, str | None]]:
    """The key rule of a pair (without the pair in front): ``request_id`` when the push has one,
    else the pair's own rule."""
    derived = _RULES[cls]

    def key(notification: m.V5Notification[Any]) -> tuple[str, str | None]:
        if notification.request_id:
            return notification.request_id, None
        return derived(notification)

    return key


def key_and_slot(notification: m.V5Notification[Any]) -> tuple[str, str]:
    """The idempotency key of a v5 push and the dedupe slot it occupies (as
    `iotpush.idempotency.key_and_slot` gives them)."""
    key, slot = rule(type(notification))(notification)
    key = f"{notification.pair}:{key}"
    return key, key if slot is None else slot
