"""What a push format is: the `PushFormat` protocol, one `TypeSpec` per type, and routes.

A push format turns the bytes of a push into a typed `Notification` and knows, for each of its
types, how a duplicate is recognised (the idempotency key rule), what a plausible one looks like
(sample values for the simulator) and which `PushMessageReceiver` callback it has, if any. A
`PushRoute` maps a receive path to the format its bodies are in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeAlias, TypeVar

import msgspec

if TYPE_CHECKING:
    from .._samples import Faker
    from .legacy.models import Notification

__all__ = ["KeyRule", "PushFormat", "PushRoute", "TypeSpec", "digest"]

N = TypeVar("N", bound="Notification")

KeyRule: TypeAlias = Callable[[Any], tuple[str, "str | None"]]
"""A notification's idempotency key and its dedupe slot (None: the key is its own slot)."""

_encode = msgspec.json.encode


def digest(value: Any) -> str:
    """A short stable hash of a JSON value, independent of member order and whitespace."""
    return hashlib.blake2b(_encode(value, order="sorted"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class TypeSpec(Generic[N]):
    """Everything iotpush knows of one notification type besides its model.

    Attributes:
        model: The notification class; its ``notify_type`` is the type's name.
        key: The idempotency rule: the key a retried or duplicated push repeats, and the slot
            whose latest key it is compared with (see `iotpush.idempotency`).
        sample: The members of a plausible fresh one, by attribute name (nested as dicts).
        callback: The `PushMessageReceiver` method called for it (None: there is none).
        order: For a type whose key is its own slot and names a time (a data report's event
            time): that time, in seconds since the epoch, or None when it does not parse. A
            retry repeats the key, so it repeats this time: a store may keep such slots in
            time order (see `iotpush.inbox.Incoming.order`). None: the type has no such time.
    """

    model: type[N]
    key: Callable[[N], tuple[str, str | None]]
    sample: Callable[[Faker], dict[str, Any]]
    callback: str | None = None
    order: Callable[[N], float | None] | None = None

    @property
    def name(self) -> str:
        """The type's name, as entries and handlers know it (``deviceDataChanged``)."""
        return self.model.notify_type


class PushFormat(Protocol):
    """A push format: how bodies of one kind are decoded, and the types they may hold.

    Attributes:
        name: The format's short name (``legacy``).
        types: Every type it knows, by name, in the order its documentation lists them.
        projections: The names of the projections (trackers) its notifications feed.
    """

    name: str
    types: Mapping[str, TypeSpec[Any]]
    projections: tuple[str, ...]

    def decode(self, body: bytes, kind: str | None = None) -> Notification:
        """Decode ``body`` into its typed notification.

        Args:
            body: The raw request body, or a stored entry's.
            kind: The type the body is known to be, for bodies that do not name it (a path of
                their own, a stored entry); None: the body says.

        Raises:
            NotificationError: Not JSON, not an object, an unknown type, or an invalid member;
                `NotificationError.path` names the member.
        """
        ...


@dataclass(frozen=True, slots=True)
class PushRoute:
    """A receive path and the format of the bodies posted to it.

    ``kind`` is the type of every body on this path when the bodies do not name one (the NB-IoT
    command status path); None: each body says.
    """

    path: str
    format: PushFormat
    kind: str | None = None
