"""Receivers written for the vendor SDK, and the SDK receiver's defects, through a real server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from iotpush import NBCommandStatusChanged, PushMessageReceiver
from iotpush.legacy import request
from iotpush.models import NOTIFICATION_TYPES
from tests.conftest import EXAMPLES, RECEIVE, example_path, wait_until


class LegacyStyle(PushMessageReceiver):
    """Written the SDK way: callbacks take only self and read `request.json`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__()

    def record(self, name: str, value: Any) -> None:
        with self.lock:
            self.calls.append((name, value))


# Give LegacyStyle one SDK-style override per type, each recording `request.json`.
for _cls in NOTIFICATION_TYPES.values():

    def _callback(self: LegacyStyle, *, _name: str = str(_cls.callback)) -> None:
        self.record(_name, request.json)

    setattr(LegacyStyle, str(_cls.callback), _callback)


def test_legacy_self_only_callbacks_read_request_json(serve: Callable[..., Any]) -> None:
    receiver = LegacyStyle()
    with serve(receiver) as (url, _):
        for name, body in EXAMPLES.items():
            assert httpx.post(url + example_path(name), content=body).status_code == 200
        wait_until(lambda: len(receiver.calls) == 22, what="22 legacy callbacks")
    by_callback = dict(receiver.calls)
    for name, body in EXAMPLES.items():
        callback = NOTIFICATION_TYPES[name.split("-", 1)[1]].callback
        assert by_callback[str(callback)] == json.loads(body), name


def test_legacy_one_argument_callback_gets_typed_notification_and_body(
    serve: Callable[..., Any],
) -> None:
    got: list[Any] = []

    class Typed(PushMessageReceiver):
        def handleNBCommandStateChanged(self, notification: NBCommandStatusChanged) -> None:  # noqa: N802
            got.append(notification)

        def handleBody(self, body: bytes) -> None:  # noqa: N802
            got.append(body)

        async def handleDeviceDeleted(self) -> None:  # noqa: N802
            got.append(("deleted", request.json["deviceId"], request.headers["Content-Type"]))

    with serve(Typed()) as (url, _):
        body = EXAMPLES["19-nbCommandStatusChanged"]
        httpx.post(
            url + RECEIVE + "/cmd", content=body, headers={"content-type": "application/json"}
        )
        wait_until(lambda: len(got) == 2)
        deleted = EXAMPLES["07-deviceDeleted"]
        httpx.post(url + RECEIVE, content=deleted, headers={"content-type": "application/json"})
        wait_until(lambda: len(got) == 4)
    assert isinstance(got[0], NBCommandStatusChanged)
    assert got[0].result.result_code == "DELIVERED"
    assert got[1] == body
    assert got[2] == ("deleted", "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4", "application/json")
    assert got[3] == deleted


def test_legacy_request_outside_a_handler_says_so() -> None:
    with pytest.raises(LookupError, match="call from a handler"):
        _ = request.json


def test_legacy_only_overridden_callbacks_are_registered() -> None:
    class One(PushMessageReceiver):
        def handleDeviceAdded(self) -> None:  # noqa: N802
            pass

    receiver = One()
    assert [h.name for h in receiver.handlers_for("deviceAdded")] == [
        "test_legacy_only_overridden_callbacks_are_registered.<locals>.One.handleDeviceAdded"
    ]
    assert receiver.handlers_for("deviceDeleted") == ()


def test_legacy_subclass_init_without_super_still_delivers(serve: Callable[..., Any]) -> None:
    got: list[Any] = []

    class SdkStyle(PushMessageReceiver):
        def __init__(self) -> None:  # the SDK's base had no __init__: no super().__init__()
            self.seen = got

        def handleDeviceDeleted(self) -> None:  # noqa: N802
            self.seen.append(request.json["deviceId"])

    receiver = SdkStyle()
    with serve(receiver) as (url, _):
        response = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"])
        wait_until(lambda: got, what="the callback")
    assert response.status_code == 200
    assert got == [json.loads(EXAMPLES["07-deviceDeleted"])["deviceId"]]
    assert repr(receiver) == "<SdkStyle with 1 handler(s)>"


def test_legacy_request_flask_members_describe_the_push(serve: Callable[..., Any]) -> None:
    seen: dict[str, Any] = {}

    class Inspecting(PushMessageReceiver):
        def handleDeviceDeleted(self) -> None:  # noqa: N802
            names = ("url", "base_url", "host", "scheme", "path", "remote_addr", "is_json",
                     "content_type", "mimetype", "method")  # fmt: skip
            seen.update({name: getattr(request, name) for name in names})
            seen["args"] = (dict(request.args), request.args.getlist("tag"))
            seen["values"], seen["form"] = dict(request.values), dict(request.form)
            seen["environ"] = request.environ

    with serve(Inspecting()) as (url, _):
        host = url.removeprefix("http://")
        response = httpx.post(
            url + RECEIVE + "?tenant=acme&tag=a&tag=b",
            content=EXAMPLES["07-deviceDeleted"],
            headers={"content-type": "application/json; charset=utf-8"},
        )
        wait_until(lambda: seen, what="the callback")
    assert response.status_code == 200
    assert seen["url"] == f"{url}{RECEIVE}?tenant=acme&tag=a&tag=b"
    assert (seen["base_url"], seen["host"], seen["scheme"]) == (url + RECEIVE, host, "http")
    assert (seen["path"], seen["remote_addr"], seen["method"]) == (RECEIVE, "127.0.0.1", "POST")
    assert seen["is_json"] is True
    assert seen["content_type"] == "application/json; charset=utf-8"
    assert seen["mimetype"] == "application/json"
    assert seen["args"] == ({"tenant": "acme", "tag": "a"}, ["a", "b"])
    assert (seen["values"], seen["form"]) == ({"tenant": "acme", "tag": "a"}, {})
    environ = seen["environ"]
    assert environ["QUERY_STRING"] == "tenant=acme&tag=a&tag=b"
    assert (environ["PATH_INFO"], environ["REMOTE_ADDR"]) == (RECEIVE, "127.0.0.1")
    assert environ["CONTENT_TYPE"] == "application/json; charset=utf-8"
    assert environ["HTTP_HOST"] == host
    assert environ["wsgi.url_scheme"] == "http"


def test_legacy_request_without_content_type_is_not_json() -> None:
    from iotpush._context import Delivery, set_delivery
    from iotpush.inbox import Entry
    from iotpush.models import decode

    body = EXAMPLES["07-deviceDeleted"]
    entry = Entry(1, 0.0, "deviceDeleted", "d", "k", RECEIVE, body, {"host": "h"}, "claimed")
    set_delivery(Delivery(entry, decode(body, "notify")))
    assert (request.content_type, request.mimetype, request.is_json) == (None, "", False)
    assert (request.url, request.remote_addr, dict(request.args)) == (
        f"http://h{RECEIVE}",
        None,
        {},
    )


# The vendor receiver's defects, each shown fixed.


def test_vendor_defect_nb_command_status_was_500_now_delivered(serve: Callable[..., Any]) -> None:
    receiver = LegacyStyle()
    with serve(receiver) as (url, _):
        on_cmd = httpx.post(url + RECEIVE + "/cmd", content=EXAMPLES["19-nbCommandStatusChanged"])
        body = json.dumps({**json.loads(EXAMPLES["19-nbCommandStatusChanged"]), "commandId": "c2"})
        on_main = httpx.post(url + RECEIVE, content=body.encode())
        wait_until(lambda: len(receiver.calls) == 2)
    assert (on_cmd.status_code, on_main.status_code) == (200, 200)
    assert [name for name, _ in receiver.calls] == ["handleNBCommandStateChanged"] * 2


def test_vendor_defect_model_deleted_went_to_device_deleted_now_own_callback(
    serve: Callable[..., Any],
) -> None:
    receiver = LegacyStyle()
    with serve(receiver) as (url, _):
        httpx.post(url + RECEIVE, content=EXAMPLES["12-deviceModelDeleted"])
        wait_until(lambda: len(receiver.calls) == 1)
    assert receiver.calls[0][0] == "handleDeviceModelDeleted"


def test_vendor_defect_unknown_type_was_silently_200_now_refused_and_kept(
    serve: Callable[..., Any], db: str
) -> None:
    import asyncio

    from iotpush import open_inbox

    body = b'{"notifyType": "deviceStatusChangedV2", "deviceId": "d"}'
    with serve(LegacyStyle()) as (url, _):
        response = httpx.post(url + RECEIVE, content=body)

    async def kept() -> list[Any]:
        async with open_inbox(db) as inbox:
            return await inbox.quarantined()

    assert response.status_code == 400
    assert response.json()["path"] == "$.notifyType"
    assert [r.body for r in asyncio.run(kept())] == [body]


def test_java_sdk_defect_space_after_colon_still_dispatched(serve: Callable[..., Any]) -> None:
    receiver = LegacyStyle()
    spaced = b'{"notifyType" : "deviceDeleted", "deviceId" : "d1", "gatewayId" : "g1"}'
    with serve(receiver) as (url, _):
        assert httpx.post(url + RECEIVE, content=spaced).status_code == 200
        wait_until(lambda: len(receiver.calls) == 1)
    assert receiver.calls == [("handleDeviceDeleted", json.loads(spaced))]
