"""The platform simulator as a library: build notifications, deliver them, post them, load-test.

Build a realistic notification of any type, with overrides, and hand it to an application the way
the platform would::

    from iotpush import testing

    n = testing.build("nbCommandStatusChanged", result={"result_code": "SUCCESSFUL"})
    response = await testing.deliver(app, n)  # any ASGI app, in process
    response = testing.post("http://127.0.0.1:8080/v1.0.0/messageReceiver", n)  # over HTTP

`deliver` calls the app directly and does not run its lifespan: wrap it in `lifespan` to start
an app that opens resources at startup (iotpush's own opens its inbox, starts its dispatcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import random
import ssl
import time
import types
import uuid
from collections.abc import (
    AsyncIterator,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar, Union, get_args, get_origin, overload

import httpx
import msgspec

from . import _load, access
from ._asgi import ASGIApp, Message
from ._load import SendReport
from ._samples import Faker
from .app import DEFAULT_PATH, DEFAULT_V5_PATH
from .exceptions import NotificationError
from .formats import FORMATS
from .formats.v5 import V5Notification
from .formats.v5 import samples as v5_samples
from .models import (
    NOTIFICATION_TYPES,
    DeviceDatasChanged,
    NBCommandStatusChanged,
    Notification,
    decode,
)

__all__ = [
    "ALL_KINDS",
    "Response",
    "SendReport",
    "build",
    "deliver",
    "encode",
    "example",
    "lifespan",
    "path_for",
    "post",
    "send",
    "with_path_token",
]

A = TypeVar("A", bound=ASGIApp)
Kind: TypeAlias = str | type[Notification]
Body: TypeAlias = bytes | Notification
N = TypeVar("N", bound=Notification)

ALL_KINDS: Final[tuple[str, ...]] = tuple(NOTIFICATION_TYPES)
"""Every ``notifyType``, in the spec's order (``nbCommandStatusChanged`` for the NB-IoT one)."""

CONTENT_TYPE: Final = "application/json;charset=UTF-8"
_EXAMPLE_TIME: Final = dt.datetime(2026, 11, 21, 10, 15, tzinfo=dt.UTC)

# --- building -------------------------------------------------------------------------------


def _kind(kind: Kind) -> type[Notification]:
    name = kind if isinstance(kind, str) else getattr(kind, "notify_type", None)
    spec = FORMATS.types.get(name) if isinstance(name, str) else None
    cls = None if spec is None else spec.model
    if cls is None or not (isinstance(kind, str) or cls is kind):
        known = tuple(FORMATS.types)
        raise ValueError(f"unknown notification type {kind!r}; expected one of {known}")
    return cls


def _struct_type(annotation: Any) -> type[msgspec.Struct] | None:
    """The struct class in ``X`` or ``X | None``, else ``None``."""
    union = get_origin(annotation) in (Union, types.UnionType)
    for arg in get_args(annotation) if union else (annotation,):
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
    return None


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> dict[str, Any]:
    """Each member's attribute name and type (resolving the types is slow: done once)."""
    return {field.name: field.type for field in msgspec.structs.fields(cls)}


def _apply(
    cls: type[msgspec.Struct], values: dict[str, Any], overrides: Mapping[str, Any], where: str
) -> dict[str, Any]:
    fields = _fields(cls)
    for name, value in overrides.items():
        if name not in fields:
            raise TypeError(f"{where} has no member {name!r} (members: {', '.join(fields)})")
        values[name] = _merge(fields[name], values.get(name), value, f"{where}.{name}")
    return values


def _merge(annotation: Any, current: Any, value: Any, where: str) -> Any:
    struct = _struct_type(annotation)
    if struct is not None and isinstance(value, dict):
        base = msgspec.structs.asdict(current) if isinstance(current, struct) else {}
        return struct(**_apply(struct, base, value, where))
    if get_origin(annotation) is list and isinstance(value, list):
        (item,) = get_args(annotation)
        if _struct_type(item) is not None:
            old = current if isinstance(current, list) and current else [None]
            return [
                _merge(item, old[i] if i < len(old) else old[0], v, f"{where}[{i}]")
                for i, v in enumerate(value)
            ]
    return value


@overload
def build(
    kind: type[N], /, *, seed: int | None = ..., now: dt.datetime | None = ..., **overrides: Any
) -> N: ...
@overload
def build(
    kind: str, /, *, seed: int | None = ..., now: dt.datetime | None = ..., **overrides: Any
) -> Notification: ...
def build(
    kind: Kind, /, *, seed: int | None = None, now: dt.datetime | None = None, **overrides: Any
) -> Notification:
    """Build a realistic notification, as the platform would send it now.

    Ids are fresh (a UUID-like ``deviceId``, hex ``commandId``...), times are ``now``, service
    data is plausible, and members the platform sends as ``null`` are ``None``.

    Args:
        kind: A ``notifyType`` (``"deviceDataChanged"``, ``"nbCommandStatusChanged"``), a v5
            pair (``"device.property:report"``) or a notification class.
        seed: Makes the random values reproducible (times still follow ``now``).
        now: The time used for every time member; default: the current time.
        **overrides: Members to set, by attribute name (``device_id``). A dict given for a
            nested structure is merged into the default one (``result={"result_code": "FAILED"}``);
            a list of dicts for a list of structures is merged item by item (items past the
            default ones start from its first). Values are not
            type-checked, so a test can build an invalid notification on purpose. A v5 push
            takes its members by their wire names (``notify_data={"body": {...}}``), checked.

    Raises:
        ValueError: ``kind`` is not a notification type.
        TypeError: An override names a member that the type does not have.
    """
    cls = _kind(kind)
    faker = Faker(random.Random(seed), now or dt.datetime.now(dt.UTC))
    if issubclass(cls, V5Notification):
        return v5_samples.build(cls.pair, faker, overrides)
    values = _apply(cls, {}, FORMATS.types[cls.notify_type].sample(faker), cls.notify_type)
    return cls(**_apply(cls, values, overrides, cls.notify_type))


@overload
def example(kind: type[N]) -> N: ...
@overload
def example(kind: str) -> Notification: ...
def example(kind: Kind) -> Notification:
    """Return the fixed example of a type: the same values on every call."""
    return build(kind, seed=20151212, now=_EXAMPLE_TIME)


def encode(notification: Notification, *, pretty: bool = False) -> bytes:
    """Encode a notification as the platform sends it: compact JSON, explicit nulls.

    Args:
        notification: The notification.
        pretty: Indent the JSON, for display.
    """
    if isinstance(notification, V5Notification):
        body = msgspec.json.encode(notification.wire())
        return msgspec.json.format(body, indent=2) if pretty else body
    data: dict[str, Any] = msgspec.to_builtins(notification)
    # Members the platform leaves out rather than sending null.
    if isinstance(notification, DeviceDatasChanged) and notification.service is None:
        data.pop("service", None)
    info = data.get("deviceInfo")
    if isinstance(info, dict) and info.get("isHD") is None:
        info.pop("isHD", None)
    for key in ("reasons", "actionsResults"):
        if isinstance(data.get(key), list):
            data[key] = [{k: v for k, v in item.items() if v is not None} for item in data[key]]
    body = msgspec.json.encode(data)
    return msgspec.json.format(body, indent=2) if pretty else body


def path_for(notification_or_kind: Notification | Kind, prefix: str = DEFAULT_PATH) -> str:
    """Return the path a notification is posted to: ``prefix``, plus ``/cmd`` for NB-IoT status;
    for a v5 push, the v5 path (``prefix`` if it is not the default legacy one)."""
    cls = (
        type(notification_or_kind)
        if isinstance(notification_or_kind, Notification)
        else _kind(notification_or_kind)
    )
    if issubclass(cls, V5Notification):
        return DEFAULT_V5_PATH if prefix == DEFAULT_PATH else prefix
    prefix = prefix.rstrip("/")
    return f"{prefix}/cmd" if cls is NBCommandStatusChanged else prefix or "/"


def _prepare(item: Body) -> tuple[bytes, bool]:
    """The body to send, and whether it is an NB-IoT command status."""
    if isinstance(item, Notification):
        return encode(item), isinstance(item, NBCommandStatusChanged)
    if isinstance(item, bytes | bytearray | memoryview):
        body = bytes(item)
        try:
            return body, isinstance(decode(body), NBCommandStatusChanged)
        except NotificationError:
            return body, False
    raise TypeError(f"expected bytes or a Notification, got {type(item).__name__}")


def _target(url: str, command: bool) -> str:
    """``url``, or its ``/cmd`` sub-path for an NB-IoT status when it is a main receive path
    (the default path, under any prefix such as a secret path token)."""
    parsed = httpx.URL(url)
    path = parsed.path.rstrip("/")
    if not command or not path.endswith(DEFAULT_PATH):
        return url
    return str(parsed.copy_with(path=f"{path}/cmd"))


def _headers(extra: Mapping[str, str] | None, body: bytes | None = None) -> dict[str, str]:
    headers = {"content-type": CONTENT_TYPE}
    if body is not None:
        headers["content-length"] = str(len(body))
    headers.update((name.lower(), value) for name, value in (extra or {}).items())
    return headers


# --- delivering -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """An application's answer: status, body, and headers (lower-case names)."""

    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        """Decode the body as JSON."""
        return msgspec.json.decode(self.body)


@contextlib.asynccontextmanager
async def lifespan(app: A) -> AsyncIterator[A]:
    """Run ``app``'s ASGI lifespan around a block: startup before, shutdown after.

    iotpush's own app opens its inbox and starts its dispatcher at startup::

        async with testing.lifespan(create_app(Config(receiver=r, store="memory://"))) as app:
            await testing.deliver(app, testing.build("deviceDeleted"))

    Raises:
        RuntimeError: The app reported that startup or shutdown failed.
    """
    inbound: asyncio.Queue[Message] = asyncio.Queue()
    outbound: asyncio.Queue[Message] = asyncio.Queue()
    scope: Message = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def serve() -> None:
        await app(scope, inbound.get, outbound.put)

    task = asyncio.create_task(serve())

    async def step(message: str) -> None:
        await inbound.put({"type": f"lifespan.{message}"})
        answer = await outbound.get()
        if answer["type"] != f"lifespan.{message}.complete":
            raise RuntimeError(f"lifespan {message} failed: {answer.get('message', answer)}")

    try:
        await step("startup")
        yield app
        await step("shutdown")
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def deliver(
    app: ASGIApp,
    notification_or_body: Body,
    *,
    path: str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> Response:
    """Deliver a notification in process to an ASGI app, as the platform would post it.

    Args:
        app: Any ASGI 3 application.
        notification_or_body: A notification, or bytes sent as they are (malformed input too).
        path: The request path, optionally with a query; default: `path_for` the notification
            (bytes that decode as an NB-IoT command status go to ``/cmd`` too).
        headers: Extra request headers; they replace the defaults of the same name.
        method: The HTTP method.

    Raises:
        RuntimeError: The app returned without a complete response. Errors raised by the app
            propagate.
    """
    body, command = _prepare(notification_or_body)
    if path is None:
        path = f"{DEFAULT_PATH}/cmd" if command else DEFAULT_PATH
    request_path, _, query = path.partition("?")
    request_headers = {"host": "127.0.0.1:8080", **_headers(headers, body)}
    scope: Message = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": request_path,
        "raw_path": request_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request_headers.items()],
        "client": ("127.0.0.1", 49152),
        "server": ("127.0.0.1", 8080),
    }
    body_sent = False
    done = asyncio.Event()
    status: int | None = None
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the client stays connected until the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for name, value in message.get("headers", []):
                key, text = bytes(name).decode("latin-1").lower(), bytes(value).decode("latin-1")
                old = response_headers.get(key)
                response_headers[key] = text if old is None else f"{old}, {text}"
        elif message["type"] == "http.response.body":
            if status is None:
                raise RuntimeError("the app sent a response body before http.response.start")
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    if status is None or not done.is_set():
        raise RuntimeError("the app returned without a complete response")
    return Response(status, b"".join(chunks), response_headers)


def post(
    url: str,
    notification_or_body: Body,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> Response:
    """Post one notification to a URL, as the platform does (waits up to ``timeout`` seconds).

    An NB-IoT command status posted to the main receive path goes to its ``/cmd`` sub-path.
    """
    body, command = _prepare(notification_or_body)
    with httpx.Client(timeout=timeout) as client:
        answer = client.post(_target(url, command), content=body, headers=_headers(headers))
    return Response(answer.status_code, answer.content, dict(answer.headers))


# --- load -----------------------------------------------------------------------------------


def with_path_token(url: str, token: str) -> str:
    """``url`` with ``token`` as its first path segment (a server's ``--path-token``)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path=f"/{token}{parsed.path}"))


async def send(
    url: str,
    bodies: Sequence[Body] | Callable[[int], Body],
    *,
    count: int = 1,
    rate: float | None = None,
    concurrency: int = 1,
    timeout: float = 15.0,
    on_progress: Callable[[int], None] | None = None,
    verify: ssl.SSLContext | bool = True,
    path_token: str | None = None,
    signing_secret: str | None = None,
) -> SendReport:
    """Post ``count`` notifications to ``url`` over keep-alive connections; report what happened.

    When ``url``'s path is the main receive path (``/v1.0.0/messageReceiver``), an NB-IoT command
    status goes to its ``/cmd`` sub-path, as the platform sends it; any other URL gets every body.

    Args:
        url: The callback URL.
        bodies: Bodies used in turn (request ``i`` sends ``bodies[i % len(bodies)]``), or a
            function building the body of request ``i``.
        count: How many requests to make.
        rate: Requests per second overall; default: as fast as ``concurrency`` allows.
        concurrency: Requests in flight at once (and connections kept open).
        timeout: Seconds to wait for each answer; a request that times out counts as an error.
        on_progress: Called with the number of finished requests after each one.
        verify: How to check an HTTPS server: an ``ssl.SSLContext`` holding its CA, True (the
            system's CAs) or False (no check).
        path_token: A server's secret path token, put in front of ``url``'s path.
        signing_secret: Sign each push as Standard Webhooks does (`iotpush.access.sign`).
    """
    if count < 0 or concurrency < 1 or (rate is not None and rate <= 0):
        raise ValueError("count must be >= 0, concurrency >= 1 and rate > 0")
    if path_token is not None:
        url = with_path_token(url, path_token)
    if isinstance(bodies, bytes | Notification):
        bodies = [bodies]
    if callable(bodies):
        build_body = bodies

        def make(i: int) -> tuple[bytes, bool]:
            return _prepare(build_body(i))
    else:
        prepared = [_prepare(item) for item in bodies]
        if not prepared:
            raise ValueError("bodies is empty")

        def make(i: int) -> tuple[bytes, bool]:
            return prepared[i % len(prepared)]

    sign = None
    if signing_secret is not None:
        key = signing_secret

        def sign(body: bytes) -> dict[str, str]:
            return access.sign(key, body, msg_id=f"msg_{uuid.uuid4().hex}", timestamp=time.time())

    return await _load.run(
        (url, _target(url, True)), make, count=count, rate=rate, concurrency=concurrency,
        timeout=timeout, headers={"content-type": CONTENT_TYPE}, on_progress=on_progress,
        verify=verify, sign=sign,
    )  # fmt: skip
