from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import msgspec
import pytest

from iotpush import v5
from iotpush._samples import Faker
from iotpush.exceptions import NotificationError
from iotpush.formats.v5 import samples
from iotpush.formats.v5.models import dec_hook

NOW = dt.datetime(2026, 11, 21, 10, 15, 30, tzinfo=dt.UTC)
PAIRS = list(v5.PAIRS)


def wire(pair: str, seed: int = 7) -> dict[str, Any]:
    return samples.defaults(pair, Faker(random.Random(seed), NOW))


def body_beside(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    notify = dict(data["notify_data"])
    data["body"] = notify.pop("body")
    data["notify_data"] = notify
    return data


def flat(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    notify = data["notify_data"]
    data["notify_data"] = {**notify.get("header", {}), **notify["body"]}
    return data


def only_device_id(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    notify = dict(data["notify_data"])
    if "header" in notify:
        notify["header"] = {"device_id": notify["header"]["device_id"]}
    data["notify_data"] = notify
    return data


def no_event_time(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in ("event_time", "event_time_ms")}


SHAPES = {
    "documented": lambda d: d,
    "body-beside": body_beside,
    "flat": flat,
    "header-device-only": only_device_id,
    "no-event-time": no_event_time,
}


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize("pair", PAIRS, ids=PAIRS)
def test_decode_each_pair_in_each_shape_gives_its_model(pair: str, shape: str) -> None:
    data = wire(pair)
    body = encode(SHAPES[shape](data))
    n = v5.decode(body)
    assert type(n) is v5.PAIRS[pair]
    assert n.notify_type == pair == f"{n.resource}:{n.event}"
    assert n.raw is body
    assert n.json == json.loads(body)
    assert n.extra == {}
    assert n.request_id == data["request_id"]
    expected = data["notify_data"]["body"]
    assert n.body == msgspec.convert(expected, type(n.body), dec_hook=dec_hook)
    header = data["notify_data"].get("header")
    assert n.header.device_id == (header["device_id"] if header else None)
    assert n.device == (header["device_id"] if header else None)
    if shape == "no-event-time":
        assert n.event_time is None and n.time is None
    else:
        assert n.event_time == NOW and n.time == NOW


TIME_FORMS = {
    "compact": "20261121T101530Z",
    "iso-millis": "2026-11-21T10:15:30.000Z",
    "iso-offset": "2026-11-21T12:15:30+02:00",
    "epoch-millis": int(NOW.timestamp() * 1000),
    "epoch-millis-string": str(int(NOW.timestamp() * 1000)),
}


@pytest.mark.parametrize("form", list(TIME_FORMS), ids=list(TIME_FORMS))
def test_decode_time_forms_at_top_and_in_services_parse_to_utc(form: str) -> None:
    data = wire("device.property:report")
    data["event_time"] = data["event_time_ms"] = TIME_FORMS[form]
    data["notify_data"]["body"]["services"][0]["event_time"] = TIME_FORMS[form]
    n = v5.decode(encode(data))
    assert isinstance(n, v5.DevicePropertyReport)
    assert n.event_time == n.event_time_ms == NOW
    assert isinstance(n.event_time, v5.Time)
    assert n.body.services[0].event_time == NOW
    assert n.body.services[0].event_time.tzinfo is not None


def test_decode_flat_message_report_keeps_message_as_payload() -> None:
    body = (
        b'{"resource":"device.message","event":"report","notify_data":'
        b'{"device_id":"d-1","message":"aGVsbG8=","event_time":"20261121T101530Z",'
        b'"tags":[{"tag_key":"k","tag_value":"v"}]}}'
    )
    n = v5.decode(body)
    assert isinstance(n, v5.DeviceMessageReport)
    assert n.device == "d-1"
    assert n.body.payload == "aGVsbG8="
    assert n.header.tags == [v5.Tag(tag_key="k", tag_value="v")]


def test_decode_delete_without_body_has_an_empty_body() -> None:
    body = b'{"resource":"device","event":"delete","notify_data":{"header":{"device_id":"d-9"}}}'
    n = v5.decode(body)
    assert isinstance(n, v5.DeviceDelete)
    assert n.device == "d-9"
    assert n.body == v5.DeviceBody()


def test_decode_unknown_members_are_kept_in_extra() -> None:
    data = wire("device.status:update") | {"trace": {"x": 1}}
    data["notify_data"]["body"]["reason"] = "heartbeat"
    n = v5.decode(encode(data))
    assert n.extra == {"trace": {"x": 1}}
    assert n.json["notify_data"]["body"]["reason"] == "heartbeat"


BAD = {
    "not-json": (b"{", "$", "invalid JSON"),
    "not-object": (b"[1]", "$", "Expected `object`"),
    "no-resource": (b'{"event":"report"}', "$.resource", "missing required member"),
    "no-event": (b'{"resource":"device"}', "$.event", "missing required member"),
    "resource-not-string": (b'{"resource":1,"event":"x"}', "$.resource", "Expected `str`"),
    "unknown-pair": (b'{"resource":"device","event":"explode"}', "$.event", "unknown"),
    "no-body": (
        b'{"resource":"device.status","event":"update","notify_data":{"header":{}}}',
        "$.notify_data.body",
        "missing required member `body`",
    ),
    "no-notify-data": (
        b'{"resource":"device.status","event":"update"}',
        "$.notify_data.body",
        "missing required member `body`",
    ),
    "body-not-object": (
        b'{"resource":"device.status","event":"update","notify_data":{"body":[1]}}',
        "$.notify_data.body",
        "Expected `object",
    ),
    "services-wrong": (
        b'{"resource":"device.property","event":"report","notify_data":{"body":{"services":{}}}}',
        "$.notify_data.body.services",
        "Expected `array`",
    ),
    "bad-time": (
        b'{"resource":"device.status","event":"update","event_time":"yesterday",'
        b'"notify_data":{"body":{"status":"ONLINE"}}}',
        "$.event_time",
        "expected a time",
    ),
    "bad-service-time": (
        b'{"resource":"device.property","event":"report","notify_data":{"body":'
        b'{"services":[{"service_id":"s","event_time":true}]}}}',
        "$.notify_data.body.services[0].event_time",
        "expected a time",
    ),
    "flat-wrong-type": (
        b'{"resource":"device.command.status","event":"update","notify_data":{"command_id":1}}',
        "$.notify_data.command_id",
        "Expected `str`",
    ),
    "header-wrong-type": (
        b'{"resource":"device.status","event":"update","notify_data":'
        b'{"header":{"device_id":5},"body":{"status":"ONLINE"}}}',
        "$.notify_data.header.device_id",
        "Expected `str",
    ),
}


@pytest.mark.parametrize("name", list(BAD), ids=list(BAD))
def test_decode_bad_input_raises_with_its_path(name: str) -> None:
    body, path, reason = BAD[name]
    with pytest.raises(NotificationError) as caught:
        v5.decode(body)
    assert caught.value.path == path
    assert reason in caught.value.reason


def test_decode_deeply_nested_raises_notification_error() -> None:
    body = b'{"resource":"device.message","event":"report","x":' + b"[" * 100_000
    with pytest.raises(NotificationError):
        v5.decode(body)


@pytest.mark.parametrize("value", ["", "20261321T101530Z", "1.5e3x", [], None], ids=repr)
def test_parse_v5_time_bad_value_raises(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        v5.parse_v5_time(value)


def test_parse_v5_time_naive_iso_is_utc() -> None:
    assert v5.parse_v5_time("2026-11-21T10:15:30") == NOW


@pytest.mark.parametrize("pair", PAIRS, ids=PAIRS)
def test_sample_raw_round_trips_through_decode(pair: str) -> None:
    n = samples.build(pair, Faker(random.Random(3), NOW), {})
    again = v5.decode(n.raw)
    assert again == n
    assert again.raw == n.raw


def test_sample_build_overrides_merge_and_unknown_member_raises() -> None:
    f = Faker(random.Random(3), NOW)
    n = samples.build("device.status:update", f, {"notify_data": {"body": {"status": "OFFLINE"}}})
    assert isinstance(n, v5.DeviceStatusUpdate)
    assert n.body.status == "OFFLINE"
    assert n.body.last_online_time == NOW
    with pytest.raises(TypeError, match="no member 'device_id'"):
        samples.build("device.status:update", f, {"device_id": "x"})
