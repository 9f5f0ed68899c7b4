"""Push formats: how the bodies posted to each receive path become typed notifications.

Each format is a package of its own implementing `PushFormat` (its models, key rules, samples
and decoder) and is registered once in `FORMATS`. Type names are unique across formats, so a
stored entry's type tells which format decodes its body again, and which key rule keys it.

Adding a format: a package ``iotpush/formats/NAME/`` with an object implementing `PushFormat`,
added to `FORMATS` below; a route (`PushRoute`) maps the paths its bodies arrive on to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..exceptions import NotificationError
from .base import KeyRule, PushFormat, PushRoute, TypeSpec, digest
from .legacy import LEGACY
from .legacy.models import Notification
from .v5 import V5, is_v5

__all__ = [
    "FORMATS",
    "LEGACY",
    "LEGACY_OR_V5",
    "V5",
    "Formats",
    "KeyRule",
    "LegacyOrV5",
    "PushFormat",
    "PushRoute",
    "TypeSpec",
    "digest",
]


class Formats:
    """The registered formats, and every type they know by name.

    Raises:
        ValueError: Two formats name a type alike.
    """

    def __init__(self, formats: Iterable[PushFormat]) -> None:
        self.formats = tuple(formats)
        self.types: dict[str, TypeSpec[Any]] = {}
        self._format_of: dict[str, PushFormat] = {}
        for fmt in self.formats:
            for name, spec in fmt.types.items():
                if name in self.types:
                    raise ValueError(f"two formats know a type {name!r}")
                self.types[name] = spec
                self._format_of[name] = fmt
        self._keys: dict[type, KeyRule] = {spec.model: spec.key for spec in self.types.values()}
        self._orders = {spec.model: spec.order for spec in self.types.values() if spec.order}

    def format_of(self, kind: str) -> PushFormat:
        """The format of the type named ``kind``.

        Raises:
            KeyError: No registered format knows ``kind``.
        """
        return self._format_of[kind]

    def decode_stored(self, kind: str, body: bytes) -> Notification:
        """Decode the body of a kept entry of type ``kind`` again.

        Raises:
            NotificationError: The body does not decode (a model changed since).
        """
        fmt = self._format_of.get(kind)
        if fmt is None:
            raise NotificationError(
                f"no push format knows the type {kind!r}", problem="unknown_type"
            )
        return fmt.decode(body, kind)

    def key_and_slot(self, notification: Notification) -> tuple[str, str]:
        """The idempotency key of ``notification`` and the dedupe slot it occupies.

        Keys start with the type's name, so keys of different types never meet; state slots
        are shared by the types that change the same state.
        """
        key, slot = self._keys[type(notification)](notification)
        key = f"{notification.notify_type}:{key}"
        return key, key if slot is None else slot

    def slot_order(self, notification: Notification) -> float | None:
        """The time the key of ``notification`` names, when its type says (`TypeSpec.order`)."""
        order = self._orders.get(type(notification))
        return None if order is None else order(notification)


FORMATS: Final = Formats([LEGACY, V5])
"""Every push format iotpush knows: add a new one here."""


class LegacyOrV5:
    """The legacy main path's format: legacy bodies, and v5 bodies posted there (a body without
    ``notifyType`` that has ``resource`` and ``event``), since operators reuse their URL."""

    name: str = "legacy"
    projections: tuple[str, ...] = (*LEGACY.projections, *V5.projections)

    def __init__(self) -> None:
        self.types: Mapping[str, TypeSpec[Any]] = {**LEGACY.types, **V5.types}

    def decode(self, body: bytes, kind: str | None = None) -> Notification:
        """Decode ``body`` as a legacy notification, else (without ``notifyType``) as v5."""
        try:
            return LEGACY.decode(body, kind)
        except NotificationError as exc:
            if kind is None and exc.path == "$.notifyType" and is_v5(body):
                return V5.decode(body)
            raise


LEGACY_OR_V5: Final = LegacyOrV5()
"""The format of the legacy main path (see `LegacyOrV5`)."""
