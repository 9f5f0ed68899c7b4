"""Typed models of the v5 data-forwarding pushes: one class per ``resource:event`` pair.

On the wire a push is an envelope (``resource``, ``event``, ``event_time``, ``event_time_ms``,
``request_id``) around ``notify_data``, which holds a ``header`` (the device) and a ``body`` (what
happened). Members are snake_case on the wire as in Python. Every member the platform may leave
out is optional; unknown members are accepted and stay in the raw body (`V5Notification.raw`,
``.json``, ``.extra``).

Shapes seen besides the documented one are accepted and normalised by `iotpush.v5.decode`:
``body`` beside ``notify_data``, a flat ``notify_data`` holding the body's members directly, a
header with only ``device_id``, no header at all, ``device:delete`` without a body. Times may be
``20151212T121212Z``, ISO 8601 (``2015-12-12T12:12:12.000Z``) or epoch milliseconds: every time
member is a `Time`, an aware UTC datetime.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Final, Generic, TypeVar

import msgspec

from ..legacy.models import Notification, format_time, parse_time

__all__ = [
    "PAIRS",
    "BatchTaskBody",
    "BatchTaskUpdate",
    "CommandStatusBody",
    "Data",
    "DeviceBody",
    "DeviceCommandStatusUpdate",
    "DeviceCreate",
    "DeviceDataUpdate",
    "DeviceDelete",
    "DeviceMessageReport",
    "DeviceMessageStatusUpdate",
    "DevicePropertyReport",
    "DeviceStatusUpdate",
    "DeviceUpdate",
    "ErrorInfo",
    "Header",
    "MessageBody",
    "MessageStatusBody",
    "ProductBody",
    "ProductCreate",
    "ProductDelete",
    "ProductUpdate",
    "PropertiesBody",
    "ServiceProperties",
    "StatusBody",
    "Tag",
    "Time",
    "V5Notification",
    "dec_hook",
    "enc_hook",
    "parse_v5_time",
]

B = TypeVar("B", bound=msgspec.Struct)

# Numbers below this are taken as epoch seconds, above as milliseconds (2001-09-09 in seconds).
_MILLIS_FROM: Final = 10**11


class Time(dt.datetime):
    """A platform time, as an aware UTC datetime, whichever of its three forms it came in."""


def parse_v5_time(value: object) -> Time:
    """Parse a v5 time: ``20151212T121212Z``, ISO 8601, or epoch milliseconds (int or digits).

    ISO times without an offset are UTC, as the platform means them.

    Raises:
        ValueError: Not a time in any of these forms.
        TypeError: Neither a string nor a number.
    """
    if isinstance(value, str):
        if len(value) == 16 and value[8] == "T":
            if value[15] == "Z" and value[:8].isdigit() and value[9:15].isdigit():
                # Sliced by hand (the usual form, in every push): a tenth of strptime's cost.
                return Time(
                    int(value[:4]), int(value[4:6]), int(value[6:8]),
                    int(value[9:11]), int(value[11:13]), int(value[13:15]), tzinfo=dt.UTC,
                )  # fmt: skip
            parse_time(value)  # raises, naming the compact form
        if value.isdigit():
            return parse_v5_time(int(value))
        try:
            parsed = Time.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"expected a time (yyyyMMddTHHmmssZ, ISO 8601 or epoch milliseconds), got {value!r}"
            ) from None
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= _MILLIS_FROM else float(value)
        try:
            return Time.fromtimestamp(seconds, dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch time out of range: {value!r}") from None
    raise TypeError(f"expected a time string or epoch milliseconds, got {type(value).__name__}")


def dec_hook(kind: type, value: Any) -> Any:
    """Decode a `Time` member from any of its forms (for ``msgspec`` decoders of v5 models)."""
    if kind is Time:
        return parse_v5_time(value)
    raise NotImplementedError(f"no decoder for {kind!r}")


class _Struct(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of the nested structures: snake_case on the wire, absent members left out."""


class Tag(_Struct, kw_only=True):
    """A tag bound to the device."""

    tag_key: str
    tag_value: str | None = None


class Header(_Struct, kw_only=True):
    """Which device a push is about; every member may be absent (only ``device_id`` is common)."""

    app_id: str | None = None
    device_id: str | None = None
    node_id: str | None = None
    product_id: str | None = None
    gateway_id: str | None = None
    tags: list[Tag] | None = None


class Data(_Struct, Generic[B], kw_only=True):
    """``notify_data``: the header and the pair's body (both normalised by the decoder)."""

    header: Header | None = None
    body: B | None = None


# --- bodies ---------------------------------------------------------------------------------


class DeviceBody(_Struct, kw_only=True):
    """A device, as created, updated or deleted; a deleted device's body may be empty."""

    device_id: str | None = None
    node_id: str | None = None
    gateway_id: str | None = None
    device_name: str | None = None
    node_type: str | None = None
    description: str | None = None
    fw_version: str | None = None
    sw_version: str | None = None
    device_sdk_version: str | None = None
    auth_info: dict[str, Any] | None = None
    product_id: str | None = None
    product_name: str | None = None
    status: str | None = None
    create_time: Time | None = None
    tags: list[Tag] | None = None
    extension_info: Any = None


class StatusBody(_Struct, kw_only=True):
    """``status``: ONLINE, OFFLINE, ABNORMAL, INACTIVE or FROZEN."""

    status: str
    last_online_time: Time | None = None


class ServiceProperties(_Struct, kw_only=True):
    """The properties one service reported."""

    service_id: str
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    event_time: Time | None = None


class PropertiesBody(_Struct, kw_only=True):
    """Services and the properties they reported."""

    services: list[ServiceProperties]


class MessageBody(_Struct, kw_only=True):
    """A message a device sent: ``content`` is a string (base64 for binary devices) or JSON."""

    content: Any = None
    topic: str | None = None
    name: str | None = None
    id: str | None = None
    message: Any = None
    """The older flat shape's name for ``content``."""

    @property
    def payload(self) -> Any:
        """``content``, or the older shape's ``message``."""
        return self.message if self.content is None else self.content


class ErrorInfo(_Struct, kw_only=True):
    """Why a message or command failed."""

    error_code: str | int | None = None
    error_msg: str | None = None


class MessageStatusBody(_Struct, kw_only=True):
    """A message sent down to a device changed status (PENDING, DELIVERED, FAILED, TIMEOUT...)."""

    message_id: str
    status: str
    name: str | None = None
    topic: str | None = None
    timestamp: Time | None = None
    error_info: ErrorInfo | None = None


class CommandStatusBody(_Struct, kw_only=True):
    """A command's status (PENDING, SENT, DELIVERED, SUCCESSFUL, FAILED, TIMEOUT...) and times."""

    command_id: str
    status: str
    created_time: Time | None = None
    sent_time: Time | None = None
    delivered_time: Time | None = None
    response_time: Time | None = None
    result: Any = None


class BatchTaskBody(_Struct, kw_only=True):
    """A batch task's status (``Waitting``, ``Processing``, ``Success``, ``PartialSuccess``...)."""

    task_id: str
    status: str
    app_id: str | None = None
    task_type: str | None = None
    status_desc: str | None = None


class ProductBody(_Struct, kw_only=True):
    """A product (device model), as created, updated or deleted."""

    product_id: str | None = None
    app_id: str | None = None
    name: str | None = None
    device_type: str | None = None
    protocol_type: str | None = None
    data_format: str | None = None
    manufacturer_name: str | None = None
    industry: str | None = None
    description: str | None = None
    create_time: Time | None = None
    service_capabilities: list[Any] | None = None


# --- notifications --------------------------------------------------------------------------

_ENVELOPE: Final = frozenset(("resource", "event", "event_time", "event_time_ms", "request_id"))
_KNOWN_TOP: Final = _ENVELOPE | {"notify_data", "body"}


class V5Notification(Notification, Generic[B], tag=False, rename=None, kw_only=True):
    """Base class of every v5 push: the envelope and ``notify_data``.

    Class attributes:
        pair: ``"resource:event"``, the tag of the push; also its ``notify_type`` in the inbox,
            in handler registration and in the query API.
        body_type: The class of ``body``.
        needs_body: Whether a push without a body is refused (not for deletions).
    """

    pair: ClassVar[str]
    body_type: ClassVar[type[msgspec.Struct]]
    needs_body: ClassVar[bool] = True
    resource: str
    event: str
    event_time: Time | None = None
    event_time_ms: Time | None = None
    request_id: str | None = None
    notify_data: Data[B] = msgspec.field(default_factory=Data)
    body_beside: B | None = msgspec.field(default=None, name="body")
    """The body as the older examples place it, beside ``notify_data`` (then also `body`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "pair" in cls.__dict__:
            cls.notify_type = cls.pair

    @property
    def header(self) -> Header:
        """The header: which device (empty for pushes about no device)."""
        header = self.notify_data.header
        return _NO_HEADER if header is None else header

    @property
    def body(self) -> B:
        """The pair's body."""
        body = self.notify_data.body
        if body is None:
            body = self.notify_data.body = self.body_beside or self.body_type()  # type: ignore[assignment]
        assert body is not None
        return body

    @property
    def time(self) -> Time | None:
        """When it happened: ``event_time_ms`` (finer), else ``event_time``, else None."""
        return self.event_time_ms or self.event_time

    @property
    def device(self) -> str | None:
        """The device it is about: the header's, else the body's ``device_id``."""
        device = self.header.device_id
        if device is None:
            device = getattr(self.body, "device_id", None)
        return device

    @property
    def raw(self) -> bytes:
        """The body exactly as received (encoded as the platform would for one built in code)."""
        raw: bytes | None = self.__dict__.get("_raw")
        if raw is None:
            raw = self.__dict__["_raw"] = msgspec.json.encode(self.wire())
        return raw

    @property
    def extra(self) -> dict[str, Any]:
        """Top-level members of the body that the model does not know."""
        return {k: v for k, v in self.json.items() if k not in _KNOWN_TOP}

    def wire(self) -> dict[str, Any]:
        """The push as plain JSON values in the documented shape, times in the platform's form."""
        data: dict[str, Any] = {"resource": self.resource, "event": self.event}
        if self.event_time is not None:
            data["event_time"] = format_time(self.event_time)
        if self.event_time_ms is not None:
            data["event_time_ms"] = _format_ms(self.event_time_ms)
        if self.request_id is not None:
            data["request_id"] = self.request_id
        notify: dict[str, Any] = {}
        if self.notify_data.header is not None:
            notify["header"] = msgspec.to_builtins(self.notify_data.header, enc_hook=enc_hook)
        if self.notify_data.body is not None or self.body_beside is not None:
            notify["body"] = msgspec.to_builtins(self.body, enc_hook=enc_hook)
        data["notify_data"] = notify
        return data


_NO_HEADER: Final = Header()


def _format_ms(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def enc_hook(value: Any) -> Any:
    """Encode a `Time` as the platform writes it: compact, or ISO when it has milliseconds."""
    if isinstance(value, dt.datetime):
        return format_time(value) if value.microsecond == 0 else _format_ms(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


class DeviceCreate(V5Notification[DeviceBody], kw_only=True):
    """A device was created (registered)."""

    pair = "device:create"
    body_type = DeviceBody


class DeviceUpdate(V5Notification[DeviceBody], kw_only=True):
    """A device's information changed."""

    pair = "device:update"
    body_type = DeviceBody


class DeviceDelete(V5Notification[DeviceBody], kw_only=True):
    """A device was deleted (its body may be absent: the header names it)."""

    pair = "device:delete"
    body_type = DeviceBody
    needs_body = False


class DeviceStatusUpdate(V5Notification[StatusBody], kw_only=True):
    """A device went online, offline, abnormal, inactive or frozen."""

    pair = "device.status:update"
    body_type = StatusBody


class DevicePropertyReport(V5Notification[PropertiesBody], kw_only=True):
    """A device reported the properties of one or more services."""

    pair = "device.property:report"
    body_type = PropertiesBody


class DeviceDataUpdate(V5Notification[PropertiesBody], kw_only=True):
    """A device reported data (an older pair: the same body as a property report)."""

    pair = "device.data:update"
    body_type = PropertiesBody


class DeviceMessageReport(V5Notification[MessageBody], kw_only=True):
    """A device sent a message."""

    pair = "device.message:report"
    body_type = MessageBody


class DeviceMessageStatusUpdate(V5Notification[MessageStatusBody], kw_only=True):
    """A message sent down to a device changed status."""

    pair = "device.message.status:update"
    body_type = MessageStatusBody


class DeviceCommandStatusUpdate(V5Notification[CommandStatusBody], kw_only=True):
    """A command sent to a device changed status."""

    pair = "device.command.status:update"
    body_type = CommandStatusBody


class BatchTaskUpdate(V5Notification[BatchTaskBody], kw_only=True):
    """A batch task (firmware or software upgrade, device creation...) progressed."""

    pair = "batchtask:update"
    body_type = BatchTaskBody


class ProductCreate(V5Notification[ProductBody], kw_only=True):
    """A product was created."""

    pair = "product:create"
    body_type = ProductBody


class ProductUpdate(V5Notification[ProductBody], kw_only=True):
    """A product changed."""

    pair = "product:update"
    body_type = ProductBody


class ProductDelete(V5Notification[ProductBody], kw_only=True):
    """A product was deleted."""

    pair = "product:delete"
    body_type = ProductBody
    needs_body = False


PAIRS: Final[dict[str, type[V5Notification[Any]]]] = {
    cls.pair: cls
    for cls in (
        DeviceCreate,
        DeviceUpdate,
        DeviceDelete,
        DeviceStatusUpdate,
        DevicePropertyReport,
        DeviceMessageReport,
        DeviceMessageStatusUpdate,
        DeviceCommandStatusUpdate,
        BatchTaskUpdate,
        ProductCreate,
        ProductUpdate,
        ProductDelete,
        DeviceDataUpdate,
    )
}
"""Every v5 model by its pair, the documented ones first, then the older ``device.data:update``."""
