"""What the dispatcher tests share: bodies, appending them, waiting for states, a dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from iotpush import (
    Dispatcher,
    Entry,
    Inbox,
    Receiver,
)
from iotpush.inbox import Incoming
from iotpush.models import decode
from tests.conftest import EXAMPLES, RECEIVE

__all__ = [
    "DEVICE_DELETED",
    "NB_COMMAND",
    "all_in",
    "append",
    "count_in",
    "data_body",
    "dispatching",
    "incoming",
    "nb_body",
    "recorded",
    "until",
]

NB_COMMAND = EXAMPLES["19-nbCommandStatusChanged"]
DEVICE_DELETED = EXAMPLES["07-deviceDeleted"]


def data_body(device: str, seq: int) -> bytes:
    """A ``deviceDataChanged`` push of ``device`` whose service data carries ``seq``."""
    return json.dumps(
        {
            "notifyType": "deviceDataChanged",
            "requestId": None,
            "deviceId": device,
            "gatewayId": device,
            "service": {
                "serviceId": "Meter",
                "serviceType": "Meter",
                "data": {"seq": seq},
                "eventTime": "20261121T101500Z",
            },
        }
    ).encode()


def nb_body(command_id: str, code: str, device: str = "dev-nb") -> bytes:
    """An NB-IoT command status push."""
    result = {"resultCode": code, "resultDetail": None}
    return json.dumps({"deviceId": device, "commandId": command_id, "result": result}).encode()


def incoming(body: bytes) -> Incoming:
    """What the app would append for ``body`` (NB-IoT command statuses on their own path)."""
    command = b'"notifyType"' not in body
    notification = decode(body, "command" if command else "notify")
    return Incoming.from_notification(
        notification,
        body=body,
        path=f"{RECEIVE}/cmd" if command else RECEIVE,
        headers={"content-type": "application/json"},
        received_at=time.time(),
    )


async def append(inbox: Inbox, *bodies: bytes) -> list[int]:
    """Append ``bodies`` in order; return their entry ids."""
    return [(await inbox.append(incoming(body))).id for body in bodies]


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def all_in(inbox: Inbox, ids: list[int], state: str) -> list[Entry]:
    """Wait until every entry of ``ids`` is in ``state``; return them."""

    async def check() -> bool:
        return all([(await inbox.get(id)).state == state for id in ids])

    await until(check, f"entries {ids} to be {state}")
    return [await inbox.get(id) for id in ids]


async def count_in(inbox: Inbox, state: str, count: int) -> None:
    """Wait until ``count`` entries are in ``state``."""

    async def check() -> bool:
        return (await inbox.stats()).by_state.get(state, 0) == count

    await until(check, f"{count} entries to be {state}")


@contextlib.asynccontextmanager
async def dispatching(
    inbox: Inbox, receiver: Receiver, **options: Any
) -> AsyncIterator[Dispatcher]:
    """A started dispatcher, stopped on the way out."""
    options.setdefault("poll_interval", 0.01)
    dispatcher = Dispatcher(inbox, receiver, **options)
    await dispatcher.start()
    try:
        yield dispatcher
    finally:
        await dispatcher.stop(grace=5)


def recorded(delays: list[float]) -> Callable[[float], Awaitable[None]]:
    """A backoff ``sleep`` that records each delay instead of waiting (but lets others run)."""

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    return sleep
