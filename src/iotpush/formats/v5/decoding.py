"""Decoding v5 pushes: the two-member tag first, then the pair's own model.

The tag is ``resource`` and ``event``, two members where msgspec's tagged unions want one. A small
struct of just those two is decoded first (msgspec skims the rest of the body without building
it), then the pair's decoder, built once, decodes the whole body into its typed model. The rare
shapes (a flat ``notify_data``, ``body`` beside it, no body) are normalised afterwards, so that
``notification.body`` and ``notification.header`` are always where the documentation puts them.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ...exceptions import NotificationError
from .models import PAIRS, Data, Header, V5Notification, dec_hook

__all__ = ["decode", "is_v5", "pair_of"]


class _Tag(msgspec.Struct):
    resource: str
    event: str


class _Flat(msgspec.Struct):
    notify_data: msgspec.Raw = msgspec.Raw(b"null")


_tag_decoder: Final = msgspec.json.Decoder(_Tag)
_flat_decoder: Final = msgspec.json.Decoder(_Flat)
_header_decoder: Final = msgspec.json.Decoder(Header)
_decoders: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    pair: msgspec.json.Decoder(cls, dec_hook=dec_hook) for pair, cls in PAIRS.items()
}
_body_decoders: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    pair: msgspec.json.Decoder(cls.body_type, dec_hook=dec_hook) for pair, cls in PAIRS.items()
}
_KNOWN: Final = ", ".join(PAIRS)


def is_v5(body: bytes) -> bool:
    """Whether a body that is no legacy notification looks like a v5 push (cheap: no parsing)."""
    return b'"resource"' in body and b'"event"' in body


def _error(exc: msgspec.MsgspecError, prefix: str = "$") -> NotificationError:
    message = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return NotificationError(f"invalid JSON: {message}")
    reason, sep, path = message.rpartition(" - at `")
    if not sep:
        reason, path = message, "$"
    path = prefix + path.rstrip("`")[1:]
    if reason.startswith("Object missing required field `"):
        member = reason.removeprefix("Object missing required field `").rstrip("`")
        return NotificationError(f"missing required member `{member}`", f"{path}.{member}")
    return NotificationError(reason, path)


def pair_of(body: bytes) -> str:
    """The ``resource:event`` pair of a v5 body.

    Raises:
        NotificationError: Not a JSON object with string ``resource`` and ``event``.
    """
    try:
        tag = _tag_decoder.decode(body)
    except msgspec.MsgspecError as exc:
        raise _error(exc) from exc
    except RecursionError as exc:
        raise NotificationError("JSON nested too deeply") from exc
    return f"{tag.resource}:{tag.event}"


def decode(body: bytes) -> V5Notification[Any]:
    """Decode a v5 push into the model of its ``resource:event`` pair.

    Raises:
        NotificationError: Not JSON, no ``resource`` or ``event``, a pair iotpush does not know,
            or a member of the wrong type; `NotificationError.path` names the member.
    """
    pair = pair_of(body)
    decoder = _decoders.get(pair)
    if decoder is None:
        raise NotificationError(f"unknown resource:event pair {pair!r}; known: {_KNOWN}", "$.event")
    try:
        notification: V5Notification[Any] = decoder.decode(body)
        data = notification.notify_data
        if data.body is None:
            if notification.body_beside is not None:
                data.body = notification.body_beside
            else:
                _normalise(notification, data, body)
    except msgspec.MsgspecError as exc:
        raise _error(exc) from exc
    except RecursionError as exc:  # msgspec's own bound on nesting, reached by hostile input
        raise NotificationError("JSON nested too deeply") from exc
    notification.__dict__["_raw"] = body
    return notification


def _normalise(notification: V5Notification[Any], data: Data[Any], body: bytes) -> None:
    """A push without ``notify_data.body``: a flat ``notify_data``, or none (deletions)."""
    raw = _flat_decoder.decode(body).notify_data
    members = msgspec.json.decode(raw)
    if data.header is None and isinstance(members, dict) and members:
        # The older flat shape: the body's members (and the device's ids) in notify_data itself.
        try:
            data.header = _header_decoder.decode(raw)
            data.body = _body_decoders[notification.pair].decode(raw)
        except msgspec.MsgspecError as exc:
            raise _error(exc, "$.notify_data") from exc
        return
    if notification.needs_body:
        raise NotificationError("missing required member `body`", "$.notify_data.body")
    data.body = notification.body_type()
