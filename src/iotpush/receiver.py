"""Handler registration: which functions run for which notification types.

A `Receiver` only records handlers; the dispatcher calls them (see `iotpush.dispatch`)::

    receiver = Receiver()

    @receiver.on(DeviceDataChanged)
    async def store(notification: DeviceDataChanged) -> None: ...

    @receiver.on()  # every type
    def log(notification: Notification) -> None: ...
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import msgspec

from ._context import current_entry
from .exceptions import ReceiverLoadError
from .formats import FORMATS
from .models import Notification

__all__ = ["Handler", "Receiver", "default_receiver", "load_receiver"]

F = TypeVar("F", bound=Callable[..., Any])
Kind = str | type[Notification]


@dataclass(frozen=True, slots=True)
class Handler:
    """One registered handler function.

    Attributes:
        func: The function (or bound method) to call.
        name: Its qualified name, for logs and dead-letter records.
        is_async: Whether calling it returns an awaitable (run on the loop, not in a thread).
        argument: What it is called with: ``"notification"`` (the typed model), ``"body"`` (the
            raw bytes), or ``"none"`` (legacy style: reads ``iotpush.legacy.request``).
    """

    func: Callable[..., Any]
    name: str
    is_async: bool
    argument: Literal["notification", "body", "none"]

    @classmethod
    def wrap(
        cls, func: Callable[..., Any], argument: Literal["notification", "body"] = "notification"
    ) -> Handler:
        """Describe ``func``; one that takes no positional argument is called with none."""
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]
        name = getattr(func, "__qualname__", None) or repr(func)
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004 - async callable objects
        )
        return cls(func, name, is_async, argument if params else "none")

    def arguments(self, notification: Notification) -> tuple[Any, ...]:
        """The positional arguments to call `func` with for ``notification``."""
        if self.argument == "notification":
            return (notification,)
        if self.argument == "body":
            return (notification.raw,)
        return ()


def _type_name(kind: Kind) -> str:
    if isinstance(kind, str):
        if kind not in FORMATS.types:
            known = ", ".join(FORMATS.types)
            raise ValueError(f"unknown notification type {kind!r}; known types: {known}")
        return kind
    if isinstance(kind, type) and issubclass(kind, Notification) and hasattr(kind, "notify_type"):
        return kind.notify_type
    raise TypeError(
        f"expected a notifyType or v5 pair string, or a Notification class, got {kind!r}"
    )


class Receiver:
    """A set of handlers by notification type, plus catch-all handlers.

    Several handlers may be registered for one type; they run in registration order, catch-all
    handlers after the specific ones. Handlers may be plain or ``async`` functions.
    """

    def __init__(self) -> None:
        self._by_type: dict[str, list[Handler]] = {}
        self._any: list[Handler] = []
        self._cache: dict[str, tuple[Handler, ...]] = {}

    def on(self, *kinds: Kind) -> Callable[[F], F]:
        """Register the decorated function for ``kinds``: classes, ``notifyType`` strings or v5
        ``"resource:event"`` pairs (``"device.property:report"``).

        With no argument the function handles every type.
        """

        def decorator(func: F) -> F:
            self.add(func, *kinds)
            return func

        return decorator

    def add(
        self,
        func: Callable[..., Any],
        *kinds: Kind,
        argument: Literal["notification", "body"] = "notification",
    ) -> Handler:
        """Register ``func`` for ``kinds`` (every type when none is given)."""
        handler = Handler.wrap(func, argument)
        if not kinds:
            self._any.append(handler)
        for kind in kinds:
            self._by_type.setdefault(_type_name(kind), []).append(handler)
        self._cache.clear()
        return handler

    def handlers_for(self, notify_type: str) -> tuple[Handler, ...]:
        """The handlers to run for a notification of ``notify_type``, in order."""
        handlers = self._cache.get(notify_type)
        if handlers is None:
            handlers = (*self._by_type.get(notify_type, ()), *self._any)
            self._cache[notify_type] = handlers
        return handlers

    def __repr__(self) -> str:
        count = sum(map(len, self._by_type.values())) + len(self._any)
        return f"<{type(self).__name__} with {count} handler(s)>"


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
