"""v5 pushes through a real server on loopback: every pair in every shape, handlers, duplicates,
bad input, the v5 path under a path token, and the NATS subjects."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from iotpush import Receiver, testing
from iotpush._samples import Faker
from iotpush.events import Received, Refused
from iotpush.formats.v5 import samples
from iotpush.inbox import Entry
from iotpush.server import Config, create_app
from iotpush.sinks.nats import subject
from iotpush.v5 import PAIRS, DevicePropertyReport, DeviceStatusUpdate, V5Notification
from tests.conftest import RECEIVE, Recorder, Tally, quarantined, running, wait_until
from tests.test_v5_models import NOW, SHAPES, TIME_FORMS, encode

JSON = {"content-type": "application/json"}
V5 = "/v5/forwarding"
TOKEN = "s3cret-path-token-0123"


def test_every_pair_in_every_shape_and_time_form_is_answered_ok_and_delivered_typed(
    serve: Callable[..., Any],
) -> None:
    bodies: list[tuple[str, bytes]] = []
    seed = 0
    for pair in PAIRS:
        for shape, reshape in SHAPES.items():
            for form, value in TIME_FORMS.items():
                seed += 1
                data = samples.defaults(pair, Faker(random.Random(seed), NOW))
                data["event_time"] = data["event_time_ms"] = value
                if shape == "documented" or form == "compact":
                    bodies.append((pair, encode(reshape(data))))
    recorder = Recorder()
    with serve(recorder) as (url, app):
        tally = Tally(app.events)
        with httpx.Client(base_url=url) as client:
            for pair, body in bodies:
                answer = client.post(V5, content=body, headers=JSON)
                assert (answer.status_code, answer.text) == (200, "ok"), (pair, body)
        seen = recorder.wait_for(len(bodies))
    assert tally(Received, duplicate=False) == len(bodies)
    assert sorted(n.notify_type for n in seen) == sorted(pair for pair, _ in bodies)
    for n in seen:
        assert isinstance(n, V5Notification)
        assert type(n) is PAIRS[n.notify_type]
        assert n.event_time is None or n.event_time == NOW


def test_v5_push_posted_to_the_legacy_path_is_recognised(serve: Callable[..., Any]) -> None:
    recorder = Recorder()
    n = testing.build("device.status:update")
    with serve(recorder) as (url, _):
        answer = httpx.post(url + RECEIVE, content=testing.encode(n), headers=JSON)
        assert answer.status_code == 200
        [seen] = recorder.wait_for(1)
    assert seen == n


def test_v5_path_under_a_path_token_accepts_and_without_it_is_not_found(
    serve: Callable[..., Any],
) -> None:
    recorder = Recorder()
    body = testing.encode(testing.build("device.property:report"))
    with serve(recorder, path_token=TOKEN, v5_path="/iot/v5") as (url, _):
        assert httpx.post(url + "/iot/v5", content=body, headers=JSON).status_code == 404
        assert httpx.post(url + V5, content=body, headers=JSON).status_code == 404
        answer = httpx.post(f"{url}/{TOKEN}/iot/v5", content=body, headers=JSON)
        assert answer.status_code == 200
        recorder.wait_for(1)


def test_handlers_by_class_and_by_pair_sync_and_async_and_catch_alls_run() -> None:
    receiver = Receiver()
    calls: list[tuple[str, str]] = []
    done = threading.Event()

    @receiver.on(DevicePropertyReport)
    def by_class(n: DevicePropertyReport) -> None:
        calls.append(("class", n.body.services[0].service_id))

    @receiver.on("device.property:report")
    async def by_pair(n: DevicePropertyReport) -> None:
        await asyncio.sleep(0)
        calls.append(("pair", n.header.device_id or ""))

    @receiver.on(DeviceStatusUpdate)
    def status(n: DeviceStatusUpdate) -> None:
        calls.append(("status", n.body.status))

    @receiver.on()
    def every(n: Any) -> None:
        calls.append(("any", n.notify_type))
        if sum(c[0] == "any" for c in calls) == 2:
            done.set()

    report = testing.build("device.property:report")
    offline = testing.build("device.status:update", notify_data={"body": {"status": "OFFLINE"}})
    app = create_app(Config(receiver=receiver, store="memory://", backoff=0.05))
    with running(app) as url:
        for n in (report, offline):
            answer = httpx.post(url + testing.path_for(n), content=testing.encode(n), headers=JSON)
            assert answer.status_code == 200
        assert done.wait(10)
    assert isinstance(report, DevicePropertyReport)
    assert ("class", report.body.services[0].service_id) in calls
    assert ("pair", report.header.device_id) in calls
    assert ("status", "OFFLINE") in calls
    assert [c for c in calls if c[0] == "any"] == [
        ("any", "device.property:report"),
        ("any", "device.status:update"),
    ]


@pytest.mark.parametrize("kind", ["nope:x", "deviceNope"], ids=["pair", "legacy"])
def test_receiver_unknown_kind_raises_naming_v5_pairs(kind: str) -> None:
    with pytest.raises(ValueError, match=r"device\.property:report"):
        Receiver().add(print, kind)


def test_duplicate_v5_push_is_answered_ok_and_delivered_once(serve: Callable[..., Any]) -> None:
    recorder = Recorder()
    with_id = testing.encode(testing.build("device.property:report"))
    without = testing.encode(testing.build("device.command.status:update", request_id=None))
    with serve(recorder) as (url, app):
        tally = Tally(app.events)
        for body in (with_id, without, with_id, without):
            assert httpx.post(url + V5, content=body, headers=JSON).status_code == 200
        recorder.wait_for(2)
        wait_until(lambda: tally(Received, duplicate=True) == 2, what="two duplicates")
    assert len(recorder.seen) == 2
    assert tally(Received, duplicate=False) == 2


BAD = [
    (b'{"event":"report","notify_data":{}}', "$.resource"),
    (b'{"resource":"device.property","notify_data":{}}', "$.event"),
    (b'{"resource":"device.property","event":"explode"}', "$.event"),
    (b'{"resource":"device.status","event":"update","notify_data":{"body":"ONLINE"}}',
     "$.notify_data.body"),
    (b'{"resource":"device.property","event":"report","notify_data":{"body":{"services":[{}]}}}',
     "$.notify_data.body.services[0].service_id"),
    (b'{"resource":"device.status","event":"update","event_time":"noon",'
     b'"notify_data":{"body":{"status":"ONLINE"}}}', "$.event_time"),
]  # fmt: skip


@pytest.mark.parametrize("path", [V5, RECEIVE], ids=["v5-path", "legacy-path"])
def test_bad_v5_input_is_a_400_naming_the_path_and_quarantined(
    serve: Callable[..., Any], db: str, path: str
) -> None:
    recorder = Recorder()
    with serve(recorder) as (url, app):
        tally = Tally(app.events)
        for body, field in BAD:
            if path == RECEIVE and (b'"event"' not in body or b'"resource"' not in body):
                field = "$.notifyType"  # without both members it is taken as a legacy push
            answer = httpx.post(url + path, content=body, headers=JSON)
            assert (answer.status_code, answer.json()["path"]) == (400, field), body
    kept = quarantined(db)
    assert [k.body for k in kept] == [body for body, _ in BAD]
    assert {k.status for k in kept} == {400}
    assert recorder.seen == []
    assert tally(Refused, status=400) == len(BAD)


def entry(type_: str, device: str | None) -> Entry:
    return Entry(1, 0.0, type_, device, "k", V5, b"{}", {}, "pending")


def test_subject_of_a_v5_entry_has_pair_and_device_tokens_never_a_legacy_shape() -> None:
    assert subject("iotpush", entry("device.property:report", "d-1")) == (
        "iotpush.v5.device%2Eproperty.report.d-1"
    )
    assert subject("iotpush", entry("batchtask:update", None)) == "iotpush.v5.batchtask.update._"
    legacy = subject("iotpush", entry("deviceDataChanged", "d-1"))
    assert legacy == "iotpush.deviceDataChanged.d-1"
    for pair in PAIRS:
        tokens = subject("p", entry(pair, "a.b*c")).split(".")
        assert len(tokens) == 5 and tokens[1] == "v5"


def test_examples_and_build_cover_every_pair(tmp_path: Path) -> None:
    for pair in PAIRS:
        n = testing.example(pair)
        assert n == testing.example(pair)
        body = testing.encode(n)
        assert json.loads(testing.encode(n, pretty=True)) == json.loads(body)
        assert testing.path_for(n) == V5
        assert testing.path_for(pair, "/x/y") == "/x/y"
