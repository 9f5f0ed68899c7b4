"""The receive path through a real server on loopback: answers, limits, quarantine."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from iotpush import DeviceDataChanged, Receiver
from iotpush.events import Received, Refused
from tests.conftest import EXAMPLES, RECEIVE, Recorder, Tally, example_path, quarantined, wait_until

JSON = {"content-type": "application/json"}


def test_every_example_is_answered_ok_and_delivered_typed(serve: Callable[..., Any]) -> None:
    recorder = Recorder()
    with serve(recorder) as (url, _):
        for name, body in EXAMPLES.items():
            response = httpx.post(url + example_path(name), content=body, headers=JSON)
            assert (response.status_code, response.text) == (200, "ok"), name
        seen = recorder.wait_for(22)
    assert sorted(n.notify_type for n in seen) == sorted(n.split("-", 1)[1] for n in EXAMPLES)


@pytest.mark.parametrize(
    ("body", "path", "content_type", "status", "field", "reason"),
    [
        (b'{"notifyType": ', RECEIVE, "application/json", 400, "$", "invalid JSON"),
        (b"[]", RECEIVE, "application/json", 400, "$", "Expected `object`"),
        (b'{"deviceId": "d"}', RECEIVE, "application/json", 400, "$.notifyType", "notifyType"),
        (b'{"notifyType": "nope"}', RECEIVE, "application/json", 400, "$.notifyType", "nope"),
        (b'{"notifyType": "deviceDeleted", "deviceId": "d"}', RECEIVE, "application/json", 400,
         "$", "gatewayId"),
        (b'{"deviceId": "d", "commandId": "c", "result": {"resultCode": 1}}', RECEIVE + "/cmd",
         "application/json", 400, "$.result.resultCode", "Expected `str`, got `int`"),
        (b"{}", RECEIVE, "text/plain", 415, "$", "text/plain"),
        (b"a=1", RECEIVE, "application/x-www-form-urlencoded", 415, "$", "Content-Type"),
    ],
    ids=["malformed", "not-object", "no-type", "unknown-type", "missing-member", "wrong-type",
         "text", "form"],
)  # fmt: skip
def test_bad_input_answered_with_field_path_and_quarantined(
    serve: Callable[..., Any], db: str, body: bytes, path: str, content_type: str,
    status: int, field: str, reason: str,
) -> None:  # fmt: skip
    recorder = Recorder()
    with serve(recorder) as (url, app):
        tally = Tally(app.events)
        response = httpx.post(url + path, content=body, headers={"content-type": content_type})
    assert response.status_code == status
    answer = response.json()
    assert answer["path"] == field
    assert reason in answer["error"]
    assert tally(Refused, status=status, path=field, route=path) == 1
    [kept] = quarantined(db)
    assert (kept.body, kept.status, kept.path, kept.field) == (body, status, path, field)
    assert kept.headers["content-type"] == content_type
    assert recorder.seen == []


def test_json_content_type_variants_accepted(serve: Callable[..., Any]) -> None:
    body = EXAMPLES["07-deviceDeleted"]
    with serve() as (url, _):
        for content_type in ("application/json;charset=UTF-8", "Application/JSON", "text/json"):
            response = httpx.post(
                url + RECEIVE, content=body, headers={"content-type": content_type}
            )
            assert response.status_code == 200, content_type
        response = httpx.post(url + RECEIVE, content=body)  # no content type at all
        assert response.status_code == 200


def test_oversized_body_is_413_by_length_and_by_stream(serve: Callable[..., Any], db: str) -> None:
    big = b'{"notifyType": "deviceDeleted", "pad": "' + b"x" * 3000 + b'"}'
    with serve(max_body=1000) as (url, _):
        declared = httpx.post(url + RECEIVE, content=big, headers=JSON)

        def chunks() -> Any:
            yield big[:800]
            yield big[800:]

        streamed = httpx.post(url + RECEIVE, content=chunks(), headers=JSON)
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert "1000 bytes" in streamed.json()["error"]
    kept = quarantined(db)
    assert [k.status for k in kept] == [413, 413]
    assert kept[1].body == big[:1000]


def test_wrong_method_is_405_and_unknown_path_is_404(serve: Callable[..., Any]) -> None:
    with serve() as (url, _):
        get = httpx.get(url + RECEIVE)
        put = httpx.put(url + RECEIVE + "/cmd", content=b"{}")
        missing = httpx.post(url + "/v1.0.0/other", content=EXAMPLES["07-deviceDeleted"])
        health = httpx.get(url + "/health")
    assert (get.status_code, get.headers["allow"]) == (405, "POST")
    assert put.status_code == 405
    assert missing.status_code == 404
    assert missing.json()["error"] == "no receiver at /v1.0.0/other"
    assert health.json() == {"status": "ok"}


def test_configured_path_serves_both_routes(serve: Callable[..., Any]) -> None:
    recorder = Recorder()
    with serve(recorder, path="/hooks/s3cr3t/v1.0.0/messageReceiver") as (url, _):
        main = httpx.post(
            url + "/hooks/s3cr3t/v1.0.0/messageReceiver", content=EXAMPLES["07-deviceDeleted"]
        )
        cmd = httpx.post(url + "/hooks/s3cr3t/v1.0.0/messageReceiver/cmd",
                         content=EXAMPLES["19-nbCommandStatusChanged"])  # fmt: skip
        old = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"])
        recorder.wait_for(2)
    assert (main.status_code, cmd.status_code, old.status_code) == (200, 200, 404)


def test_handler_that_raises_does_not_change_the_answer(serve: Callable[..., Any]) -> None:
    receiver = Receiver()
    calls: list[str] = []

    @receiver.on(DeviceDataChanged)
    def broken(notification: DeviceDataChanged) -> None:
        calls.append(notification.device_id)
        raise RuntimeError("handler bug")

    with serve(receiver, max_attempts=2) as (url, _):
        response = httpx.post(url + RECEIVE, content=EXAMPLES["04-deviceDataChanged"])
        wait_until(lambda: len(calls) == 2, what="the retry")
    assert (response.status_code, response.text) == (200, "ok")


def test_duplicate_push_answered_ok_and_delivered_once(serve: Callable[..., Any]) -> None:
    recorder = Recorder()
    body = EXAMPLES["19-nbCommandStatusChanged"]
    pretty_again = json.dumps(json.loads(body), indent=4).encode()
    with serve(recorder) as (url, app):
        tally = Tally(app.events)
        first = httpx.post(url + RECEIVE + "/cmd", content=body)
        second = httpx.post(url + RECEIVE + "/cmd", content=pretty_again)
        recorder.wait_for(1)
        other = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"])
        recorder.wait_for(2)
    assert [first.status_code, second.status_code, other.status_code] == [200, 200, 200]
    assert [n.notify_type for n in recorder.seen] == ["nbCommandStatusChanged", "deviceDeleted"]
    assert (tally(Received, duplicate=True), tally(Received, duplicate=False)) == (1, 2)


def test_unexpected_failure_while_accepting_is_503_kept_and_not_acknowledged(
    serve: Callable[..., Any], db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iotpush.inbox import Incoming

    def broken(*args: Any, **kwargs: Any) -> Incoming:
        raise RuntimeError("bug in keying")

    monkeypatch.setattr(Incoming, "from_notification", broken)
    recorder = Recorder()
    with serve(recorder) as (url, _):
        response = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"])
    assert response.status_code == 503
    assert "retry" in response.json()["error"]
    [kept] = quarantined(db)
    assert (kept.status, kept.body) == (503, EXAMPLES["07-deviceDeleted"])
    assert recorder.seen == []


@pytest.mark.parametrize(
    ("max_depth", "error"),
    [(32, "JSON nested deeper than 32 levels"), (0, "JSON nested too deeply")],
    ids=["bound", "no-bound-decoder-refuses"],
)
def test_deeply_nested_body_is_400_not_500(
    serve: Callable[..., Any], db: str, max_depth: int, error: str
) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    body = b'{"notifyType": "deviceDeleted", "deviceId": "d", "gatewayId": "g", "x": ' + deep + b"}"
    with serve(max_depth=max_depth) as (url, _):
        response = httpx.post(url + RECEIVE, content=body, headers=JSON)
        alive = httpx.post(url + RECEIVE, content=EXAMPLES["07-deviceDeleted"], headers=JSON)
    assert (response.status_code, response.json()["error"]) == (400, error)
    assert alive.status_code == 200
    assert [k.status for k in quarantined(db)] == [400]
