"""The simulator library: building, encoding, delivering in process, and the load generator."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
import uuid
from collections import Counter
from typing import Any

import msgspec
import pytest

from iotpush import (
    NOTIFICATION_TYPES,
    DeviceAdded,
    DeviceDataChanged,
    DeviceDatasChanged,
    DeviceDeleted,
    NBCommandStatusChanged,
    Notification,
    decode,
    parse_time,
    testing,
)
from tests.conftest import EXAMPLES, RECEIVE, run, running

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
KINDS = pytest.mark.parametrize("kind", testing.ALL_KINDS, ids=testing.ALL_KINDS)


def route_of(notification: Notification) -> Any:
    return "command" if isinstance(notification, NBCommandStatusChanged) else "notify"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


class Echo:
    """A tiny ASGI app: records the scope and body, answers in two chunks with two headers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.scope: dict[str, Any] = {}
        self.body = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = dict(scope)
        message = await receive()
        self.body = message["body"]
        assert not message["more_body"]
        headers = [(b"content-type", b"application/json"), (b"x-seen", b"1"), (b"x-seen", b"2")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"echo": ', "more_body": True})
        await send({"type": "http.response.body", "body": self.body + b"}"})
        assert (await receive())["type"] == "http.disconnect"


class Counting:
    """A tiny ASGI app for a real server: counts requests by path; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.paths: Counter[str] = Counter()
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.bodies.append(body)
        self.paths[scope["path"]] += 1
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- build, example, encode -----------------------------------------------------------------


def test_all_kinds_equal_notification_types_in_spec_order() -> None:
    assert tuple(NOTIFICATION_TYPES) == testing.ALL_KINDS
    assert len(testing.ALL_KINDS) == 22
    assert testing.ALL_KINDS[18] == "nbCommandStatusChanged"


@KINDS
def test_build_every_kind_decodes_to_an_equal_notification(kind: str) -> None:
    built = testing.build(kind)
    decoded = decode(testing.encode(built), route_of(built))
    assert type(decoded) is NOTIFICATION_TYPES[kind]
    assert decoded == built


@KINDS
def test_example_every_kind_is_fixed_and_decodes_to_an_equal_notification(kind: str) -> None:
    first = testing.example(kind)
    assert testing.encode(first) == testing.encode(testing.example(kind))
    assert decode(testing.encode(first), route_of(first)) == first


@KINDS
def test_encode_every_kind_has_the_members_of_the_spec_example(kind: str) -> None:
    (spec,) = [json.loads(body) for name, body in EXAMPLES.items() if name.endswith(kind)]
    ours = json.loads(testing.encode(testing.example(kind)))
    extra = {"networkStatus"} if kind == "deviceInfoChanged" else set()  # real bodies carry it
    assert set(ours) == set(spec) | extra
    if "deviceInfo" in spec:
        assert set(ours["deviceInfo"]) == set(spec["deviceInfo"])


def test_build_class_kind_builds_that_class() -> None:
    assert type(testing.build(DeviceDataChanged)) is DeviceDataChanged
    assert type(testing.build(NBCommandStatusChanged)) is NBCommandStatusChanged


def test_build_default_values_look_like_the_platform() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    added = testing.build(DeviceAdded)
    data = testing.build(DeviceDataChanged)
    command = testing.build(NBCommandStatusChanged)
    assert str(uuid.UUID(added.device_id)) == added.device_id
    node = added.device_info.node_id
    assert node is not None and len(node) == 15 and luhn_valid(node)
    assert data.request_id is None and data.gateway_id == data.device_id
    assert before - dt.timedelta(seconds=5) <= parse_time(data.service.event_time)
    assert parse_time(data.service.event_time) <= dt.datetime.now(dt.UTC)
    assert data.service.data and data.service.service_id == data.service.service_type
    assert len(command.command_id) == 32 and int(command.command_id, 16) >= 0
    assert command.result.result_detail is None
    assert b'"resultDetail":null' in testing.encode(command)


def test_build_flat_override_sets_the_member() -> None:
    built = testing.build(DeviceDataChanged, device_id="d1", request_id="r1")
    assert (built.device_id, built.request_id) == ("d1", "r1")


@pytest.mark.parametrize(
    ("kind", "overrides", "attribute", "expected"),
    [
        (
            "nbCommandStatusChanged",
            {"result": {"result_code": "SUCCESSFUL"}},
            lambda n: (n.result.result_code, n.result.result_detail),
            ("SUCCESSFUL", None),
        ),
        (
            "deviceDataChanged",
            {"service": {"data": {"x": 1}}},
            lambda n: n.service.data,
            {"x": 1},
        ),
        (
            "deviceDatasChanged",
            {"services": [{}, {"data": {"y": 2}}, {"service_id": "Extra"}]},
            lambda n: [s.data == {"y": 2} or s.service_id for s in n.services][1:],
            [True, "Extra"],
        ),
        (
            "messageConfirm",
            {"header": {"from_": "/devices/d9", "status": "executed"}},
            lambda n: (n.device, n.header.status, n.header.request_id.isdigit()),
            ("d9", "executed", True),
        ),
    ],
    ids=["nb-result", "service-data", "services-list", "header-from"],
)
def test_build_nested_override_merges_into_the_default(
    kind: str, overrides: dict[str, Any], attribute: Any, expected: Any
) -> None:
    built = testing.build(kind, **overrides)
    assert attribute(built) == expected
    assert decode(testing.encode(built), route_of(built)) == built


def test_build_nested_override_keeps_the_other_default_members() -> None:
    built = testing.build(DeviceDataChanged, seed=3, now=NOW, service={"data": {"x": 1}})
    default = testing.build(DeviceDataChanged, seed=3, now=NOW)
    assert built.service.service_id == default.service.service_id
    assert built.service.event_time == default.service.event_time == "20260102T030404Z"


@pytest.mark.parametrize(
    ("overrides", "member"),
    [({"devce_id": "x"}, "devce_id"), ({"service": {"dta": {}}}, "dta")],
    ids=["top-level", "nested"],
)
def test_build_unknown_member_raises_type_error_naming_it(
    overrides: dict[str, Any], member: str
) -> None:
    with pytest.raises(TypeError, match=member):
        testing.build("deviceDataChanged", **overrides)


def test_build_unknown_kind_raises_value_error() -> None:
    with pytest.raises(ValueError, match="deviceDataChange'"):
        testing.build("deviceDataChange")


def test_build_same_seed_gives_the_same_notification() -> None:
    first = testing.build(DeviceDatasChanged, seed=7, now=NOW)
    assert testing.encode(first) == testing.encode(
        testing.build("deviceDatasChanged", seed=7, now=NOW)
    )
    other = testing.build(DeviceDatasChanged, seed=8, now=NOW)
    assert other.device_id != first.device_id


def test_build_without_seed_gives_fresh_ids() -> None:
    ids = {testing.build(DeviceDeleted).device_id for _ in range(20)}
    assert len(ids) == 20


def test_encode_compact_keeps_explicit_nulls_and_pretty_is_indented() -> None:
    notification = testing.example("deviceDataChanged")
    compact = testing.encode(notification)
    pretty = testing.encode(notification, pretty=True)
    assert b"\n" not in compact and b'"requestId":null' in compact
    assert compact.startswith(b'{"notifyType":"deviceDataChanged"')
    assert b'\n  "notifyType": "deviceDataChanged"' in pretty
    assert msgspec.json.decode(pretty) == msgspec.json.decode(compact)


def test_encode_nb_command_status_has_no_notify_type() -> None:
    body = json.loads(testing.encode(testing.build("nbCommandStatusChanged")))
    assert "notifyType" not in body and set(body) == {"deviceId", "commandId", "result"}


@pytest.mark.parametrize(
    ("target", "prefix", "expected"),
    [
        ("deviceDataChanged", RECEIVE, RECEIVE),
        ("nbCommandStatusChanged", RECEIVE, f"{RECEIVE}/cmd"),
        (NBCommandStatusChanged, "/hooks/", "/hooks/cmd"),
        (testing.example("nbCommandStatusChanged"), RECEIVE, f"{RECEIVE}/cmd"),
        (testing.example("ruleEvent"), "/hooks", "/hooks"),
    ],
    ids=["kind", "nb-kind", "nb-class-custom-prefix", "nb-notification", "notification"],
)
def test_path_for_nb_command_status_uses_the_cmd_sub_path(
    target: Any, prefix: str, expected: str
) -> None:
    assert testing.path_for(target, prefix) == expected


# --- deliver ---------------------------------------------------------------------------------


def test_deliver_notification_sends_a_platform_like_request() -> None:
    app = Echo()
    notification = testing.example("deviceDataChanged")
    response = run(testing.deliver(app, notification))
    body = testing.encode(notification)
    headers = dict(app.scope["headers"])
    assert (app.scope["type"], app.scope["method"], app.scope["path"]) == ("http", "POST", RECEIVE)
    assert app.scope["http_version"] == "1.1"
    assert app.scope["client"][0] == "127.0.0.1" and len(app.scope["server"]) == 2
    assert headers[b"content-type"] == b"application/json;charset=UTF-8"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert app.body == body
    assert response.status == 200
    assert response.body == b'{"echo": ' + body + b"}"
    assert response.headers["x-seen"] == "1, 2"
    assert response.json()["echo"] == json.loads(body)


def test_deliver_nb_command_status_goes_to_the_cmd_path() -> None:
    app = Echo()
    run(testing.deliver(app, testing.build("nbCommandStatusChanged")))
    assert app.scope["path"] == f"{RECEIVE}/cmd"


def test_deliver_bytes_are_sent_as_they_are_with_the_given_path_and_headers() -> None:
    app = Echo(status=400)
    response = run(
        testing.deliver(
            app,
            b'{"notifyType": ',
            path="/elsewhere?x=1",
            headers={"Content-Type": "text/plain"},
            method="put",
        )
    )
    assert app.body == b'{"notifyType": '
    assert (app.scope["method"], app.scope["path"], app.scope["query_string"]) == (
        "PUT",
        "/elsewhere",
        b"x=1",
    )
    assert dict(app.scope["headers"])[b"content-type"] == b"text/plain"
    assert response.status == 400


def test_deliver_app_without_a_response_raises_runtime_error() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    with pytest.raises(RuntimeError, match="without a complete response"):
        run(testing.deliver(silent, testing.example("deviceDeleted")))


# --- post and send, against a real server ------------------------------------------------------


def test_post_nb_command_status_to_the_main_path_goes_to_cmd() -> None:
    app = Counting()
    with running(app) as base:
        response = testing.post(base + RECEIVE, testing.build("nbCommandStatusChanged"))
        other = testing.post(base + RECEIVE, testing.build("deviceDeleted"))
    assert (response.status, response.body, other.status) == (200, b"ok", 200)
    assert app.paths == {f"{RECEIVE}/cmd": 1, RECEIVE: 1}


def test_send_count_requests_are_all_answered_ok() -> None:
    app = Counting()
    progress: list[int] = []
    with running(app) as base:
        report = run(
            testing.send(
                base + RECEIVE,
                lambda i: testing.build("deviceDataChanged", device_id=f"d{i}"),
                count=30,
                concurrency=4,
                on_progress=progress.append,
            )
        )
    assert (report.sent, report.ok, report.errors, report.by_status) == (30, 30, 0, {200: 30})
    assert app.paths == {RECEIVE: 30}
    assert {decode(body).device for body in app.bodies} == {f"d{i}" for i in range(30)}
    assert progress == list(range(1, 31))
    assert 0 < report.p50_ms <= report.p99_ms <= report.max_ms
    assert report.rate > 0 and report.elapsed > 0


def test_send_nb_command_status_to_the_main_path_goes_to_cmd() -> None:
    app = Counting()
    bodies = [testing.build("deviceDataChanged"), testing.build("nbCommandStatusChanged")]
    with running(app) as base:
        report = run(testing.send(base + RECEIVE + "/", bodies, count=6, concurrency=2))
    assert report.ok == 6
    assert app.paths == {RECEIVE + "/": 3, f"{RECEIVE}/cmd": 3}


def test_send_other_path_gets_every_body() -> None:
    app = Counting()
    nb = testing.encode(testing.build("nbCommandStatusChanged"))
    with running(app) as base:
        report = run(testing.send(base + "/hook", [nb], count=3))
    assert report.ok == 3
    assert app.paths == {"/hook": 3}
    assert app.bodies == [nb] * 3


def test_send_non_200_answers_are_counted_by_status() -> None:
    with running(Counting(status=503)) as base:
        report = run(testing.send(base + RECEIVE, [testing.example("deviceDeleted")], count=4))
    assert (report.sent, report.ok, report.by_status, report.errors) == (4, 0, {503: 4}, 0)


def test_send_rate_paces_the_requests() -> None:
    with running(Counting()) as base:
        started = time.perf_counter()
        report = run(
            testing.send(
                base + RECEIVE, [testing.example("deviceDeleted")], count=10, rate=50, concurrency=3
            )
        )
        took = time.perf_counter() - started
    assert report.ok == 10
    assert took >= 0.1 and report.elapsed >= 0.1


def test_send_refused_connections_count_as_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}{RECEIVE}"
    report = run(testing.send(url, [testing.example("deviceDeleted")], count=3, timeout=5))
    assert (report.sent, report.ok, report.errors, report.by_status) == (3, 0, 3, {})


@pytest.mark.parametrize(
    "options",
    [{"count": -1}, {"concurrency": 0}, {"rate": 0}, {"bodies": []}],
    ids=["negative-count", "no-concurrency", "zero-rate", "no-bodies"],
)
def test_send_invalid_arguments_raise_value_error(options: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"bodies": [b"{}"], **options}
    with pytest.raises(ValueError):
        run(testing.send("http://127.0.0.1:9/", **arguments))


def test_send_report_str_is_a_short_summary() -> None:
    report = testing.SendReport(
        sent=100,
        ok=100,
        by_status={200: 100},
        errors=0,
        elapsed=2.312,
        p50_ms=1.23,
        p99_ms=4.0,
        max_ms=9.0,
        rate=43.25,
    )
    assert str(report) == "sent 100, 200 OK 100, errors 0, 2.31 s, 43.2/s, p50 1.2 ms, p99 4.0 ms"


def test_lifespan_starts_iotpush_app_so_deliver_reaches_handlers() -> None:
    from iotpush import Config, DeviceDeleted, Receiver, create_app

    receiver = Receiver()
    seen: list[DeviceDeleted] = []
    receiver.on(DeviceDeleted)(seen.append)

    async def main() -> None:
        app = create_app(Config(receiver=receiver, store="memory://"))
        async with testing.lifespan(app):
            response = await testing.deliver(app, testing.build("deviceDeleted", device_id="d9"))
            assert response.status == 200
            await app.dispatcher.drain()
        assert [n.device_id for n in seen] == ["d9"]

    run(main())
