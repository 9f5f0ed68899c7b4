"""The query API end to end: real pushes posted to a real server, then every endpoint over HTTP.

Each answer is also decoded as the type the OpenAPI document names for it, so a drift between
what the API sends and what it documents fails here.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import pytest

from iotpush import Config, Notification, create_app, open_inbox, testing
from iotpush.api import Error, NotificationItem, Page, openapi
from iotpush.trackers import CommandRecord, DeviceRecord, ShadowRecord, UpgradeRecord
from iotpush.tracking import DeviceView, Tracking
from tests.conftest import EXAMPLES, RECEIVE, Recorder, run, running, wait_until
from tests.test_tracking import receive

DEVICE = "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"  # the spec examples' device
NB_COMMAND = "108a9c71e3d34d0a9a6b9a11c2f0b7e2"  # the spec's NB-IoT command status example

Serve = Callable[..., contextlib.AbstractContextManager[tuple[str, Any]]]


def post(url: str, *items: bytes | Notification) -> None:
    """Post each push as the platform does; each must be acknowledged."""
    for item in items:
        response = testing.post(url + RECEIVE, item)
        assert response.status == 200, response.body


def fetch(url: str, path: str, answer: Any = None, status: int = 200) -> Any:
    """GET ``path``, check the status and that the body decodes as ``answer``; return the JSON."""
    response = httpx.get(url + path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    msgspec.json.decode(response.content, type=answer or (Any if status == 200 else Error))
    return response.json()


def ids(page: dict[str, Any], key: str) -> list[Any]:
    return [item[key] for item in page["items"]]


def nb(command_id: str, device_id: str, code: str) -> Notification:
    result = {"result_code": code}
    return testing.build(
        "nbCommandStatusChanged", command_id=command_id, device_id=device_id, result=result
    )


async def expect_late(store: str, command_id: str, device_id: str) -> None:
    """Register a command from a second connection, as a script would, with a long-past deadline."""
    async with open_inbox(store) as inbox:
        await Tracking(inbox, clock=lambda: 1000.0).expect(command_id, device_id, timeout=60)


async def expect_pending(store: str, device_id: str, service_id: str) -> None:
    """Register desired properties from a second connection: unconfirmed until delivered."""
    async with open_inbox(store) as inbox:
        await Tracking(inbox).expect_shadow(device_id, service_id, {"interval": 5})


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server on an empty store, shared by the tests that only read."""
    store = f"sqlite:///{tmp_path_factory.mktemp('api') / 'iotpush.db'}"
    with running(create_app(Config(receiver=Recorder(), store=store))) as url:
        yield url


# --- commands ---------------------------------------------------------------------------------


def test_command_nb_sent_delivered_successful_then_delivered_again_stays_successful(
    serve: Serve,
) -> None:
    with serve() as (url, _):
        post(url, *(nb("cmd-1", "dev-1", code) for code in ["SENT", "DELIVERED", "SUCCESSFUL"]))
        post(url, nb("cmd-1", "dev-1", "DELIVERED"))  # the platform repeats itself
        record = fetch(url, "/api/commands/cmd-1", CommandRecord)
        entries = fetch(url, "/api/notifications?device=dev-1", Page[NotificationItem])
    assert (record["state"], record["terminal"], record["device_id"]) == (
        "SUCCESSFUL",
        True,
        "dev-1",
    )
    assert [e["code"] for e in record["history"]] == ["SENT", "DELIVERED", "SUCCESSFUL"]
    assert [item["duplicates"] for item in entries["items"]] == [0, 1, 0]


def test_command_late_delivered_after_successful_goes_to_history_only(serve: Serve) -> None:
    with serve() as (url, _):
        post(url, *(nb("cmd-1", "dev-1", code) for code in ["SENT", "SUCCESSFUL", "DELIVERED"]))
        record = fetch(url, "/api/commands/cmd-1", CommandRecord)
    assert record["state"] == "SUCCESSFUL"
    assert [(e["code"], e["applied"]) for e in record["history"]] == [
        ("SENT", True), ("SUCCESSFUL", True), ("DELIVERED", False),
    ]  # fmt: skip


QUERIES = ["", "?device=dev-a", "?state=success", "?state=PENDING", "?overdue=true",
           "?overdue=false&device=dev-b"]  # fmt: skip


def test_commands_list_filters_by_device_state_and_overdue(serve: Serve, db: str) -> None:
    with serve() as (url, _):
        post(url, nb("c-1", "dev-a", "SUCCESS"), nb("c-2", "dev-a", "DELIVERED"))
        post(url, nb("c-3", "dev-b", "FAILED"))
        run(expect_late(db, "c-4", "dev-b"))
        answers = {
            query: ids(fetch(url, f"/api/commands{query}", Page[CommandRecord]), "command_id")
            for query in QUERIES
        }
    assert answers == {
        "": ["c-1", "c-2", "c-3", "c-4"],
        "?device=dev-a": ["c-1", "c-2"],
        "?state=success": ["c-1"],
        "?state=PENDING": ["c-4"],
        "?overdue=true": ["c-4"],
        "?overdue=false&device=dev-b": ["c-3", "c-4"],
    }


def test_commands_list_pages_with_next_until_null(serve: Serve) -> None:
    with serve() as (url, _):
        post(url, *(nb(f"c-{i}", "dev-1", "SENT") for i in range(5)))
        pages, path = [], "/api/commands?limit=2"
        while True:
            page = fetch(url, path, Page[CommandRecord])
            pages.append((ids(page, "command_id"), page["next"]))
            if page["next"] is None:
                break
            path = f"/api/commands?limit=2&after={page['next']}"
    assert pages == [(["c-0", "c-1"], "c-1"), (["c-2", "c-3"], "c-3"), (["c-4"], None)]


def test_command_and_device_ids_with_colon_and_slash_are_url_decoded(serve: Serve) -> None:
    with serve() as (url, _):
        post(
            url,
            testing.build("deviceAdded", device_id="urn:dev/1"),
            nb("a/b:c", "urn:dev/1", "SENT"),
        )
        record = fetch(url, "/api/commands/a%2Fb%3Ac", CommandRecord)
        view = fetch(url, "/api/devices/urn:dev%2F1", DeviceView)
        by_device = fetch(url, "/api/commands?device=urn%3Adev%2F1", Page[CommandRecord])
    assert (record["command_id"], record["device_id"]) == ("a/b:c", "urn:dev/1")
    assert [c["command_id"] for c in view["commands"]] == ["a/b:c"]
    assert ids(by_device, "command_id") == ["a/b:c"]


# --- devices and shadows ----------------------------------------------------------------------


def test_device_view_merges_registry_data_shadow_and_commands(serve: Serve) -> None:
    names = ["01-deviceAdded", "03-deviceInfoChanged", "04-deviceDataChanged",
             "05-deviceDatasChanged", "14-deviceDesiredPropertiesModifyStatusChanged",
             "08-messageConfirm", "09-commandRsp", "19-nbCommandStatusChanged"]  # fmt: skip
    with serve() as (url, _):
        post(url, *(EXAMPLES[name] for name in names))
        view = fetch(url, f"/api/devices/{DEVICE}", DeviceView)
    device = view["device"]
    assert device["info"] == {
        "nodeId": "862177041314827",
        "status": "ONLINE",
        "statusDetail": "NONE",
    }
    assert (device["status"], device["node_type"], device["deleted_at"]) == (
        "ONLINE",
        "GATEWAY",
        None,
    )
    assert device["data"]["Brightness"]["brightness"]["value"] == 80
    assert device["data"]["Brightness"]["brightness"]["event_time"] == "20151212T121212Z"
    assert device["data"]["Temperature"]["temperature"]["value"] == 21.5
    assert [(s["service_id"], s["status"], s["synced"]) for s in view["shadow"]] == [
        ("Device", "DELIVERED", True)
    ]
    assert [(c["command_id"], c["state"]) for c in view["commands"]] == [
        (NB_COMMAND, "DELIVERED"), ("1006", "SUCCESSFUL"), ("1005", "DELIVERED"),
    ]  # most recently updated first  # fmt: skip
    assert view["commands_total"] == 3


def test_device_view_holds_as_many_recent_commands_as_asked_and_counts_all(serve: Serve) -> None:
    with serve() as (url, _):
        post(url, testing.build("deviceAdded", device_id="dev-1"))
        post(url, *(nb(f"c-{i}", "dev-1", "SENT") for i in range(4)), nb("c-x", "dev-2", "SENT"))
        views = {n: fetch(url, f"/api/devices/dev-1?commands={n}", DeviceView) for n in (2, 0)}
        default = fetch(url, "/api/devices/dev-1", DeviceView)
    assert [(c["command_id"]) for c in views[2]["commands"]] == ["c-3", "c-2"]
    assert [(c["command_id"]) for c in default["commands"]] == ["c-3", "c-2", "c-1", "c-0"]
    assert views[0]["commands"] == []
    assert [v["commands_total"] for v in (views[2], views[0], default)] == [4, 4, 4]


def test_devices_list_filters_status_hides_deleted_and_pages(serve: Serve) -> None:
    added = [("d-1", "ONLINE"), ("d-2", "OFFLINE"), ("d-3", "ONLINE")]
    with serve() as (url, _):
        post(url, *(testing.build("deviceAdded", device_id=d, device_info={"status": s})
                    for d, s in added))  # fmt: skip
        post(url, testing.build("deviceDeleted", device_id="d-3"))
        live = fetch(url, "/api/devices", Page[DeviceRecord])
        online = fetch(url, "/api/devices?status=ONLINE", Page[DeviceRecord])
        every = fetch(url, "/api/devices?deleted=true", Page[DeviceRecord])
        first = fetch(url, "/api/devices?limit=1", Page[DeviceRecord])
        last = fetch(url, "/api/devices?limit=1&after=d-1", Page[DeviceRecord])
        after_last = fetch(url, "/api/devices?limit=1&after=d-2", Page[DeviceRecord])
    assert (ids(live, "device_id"), live["next"]) == (["d-1", "d-2"], None)
    assert ids(online, "device_id") == ["d-1"]
    assert [(d["device_id"], d["deleted_at"] is not None) for d in every["items"]] == [
        ("d-1", False), ("d-2", False), ("d-3", True),
    ]  # fmt: skip
    assert (ids(first, "device_id"), first["next"]) == (["d-1"], "d-1")
    assert (ids(last, "device_id"), last["next"]) == (["d-2"], "d-2")
    assert after_last == {"items": [], "next": None}


def test_shadow_unsynced_lists_services_whose_last_status_failed(serve: Serve) -> None:
    def shadow(device: str, service: str, status: str, value: int) -> Notification:
        return testing.build(
            "deviceDesiredPropertiesModifyStatusChanged", device_id=device, service_id=service,
            status=status, properties={"interval": value},
        )  # fmt: skip

    with serve() as (url, _):
        post(url, shadow("dev-1", "Device", "DELIVERED", 1), shadow("dev-1", "Net", "FAILED", 2))
        post(url, shadow("dev-2", "Device", "FAILED", 3), shadow("dev-2", "Device", "DELIVERED", 3))
        unsynced = fetch(url, "/api/shadow/unsynced", Page[ShadowRecord])
    assert [(s["device_id"], s["service_id"], s["failed"]) for s in unsynced["items"]] == [
        ("dev-1", "Net", {"interval": 2})
    ]
    assert unsynced["next"] is None


def test_shadow_unsynced_pages_with_next_until_null(serve: Serve, db: str) -> None:
    def failed(device: str, service: str) -> Notification:
        return testing.build(
            "deviceDesiredPropertiesModifyStatusChanged", device_id=device, service_id=service,
            status="FAILED", properties={"interval": 1},
        )  # fmt: skip

    with serve() as (url, _):
        post(url, failed("dev/2", "A"), failed("dev-1", "B"), failed("dev-1", "A"))
        run(expect_pending(db, "dev-1", "C"))
        pages, after = [], ""
        while True:
            page = fetch(url, f"/api/shadow/unsynced?limit=2{after}", Page[ShadowRecord])
            pages.append([(s["device_id"], s["service_id"]) for s in page["items"]])
            if page["next"] is None:
                break
            after = f"&after={page['next']}"
    assert pages == [[("dev-1", "A"), ("dev-1", "B")], [("dev-1", "C"), ("dev/2", "A")], []]


# --- upgrades ---------------------------------------------------------------------------------


def test_upgrade_firmware_steps_and_result_show_per_device(serve: Serve) -> None:
    key = {"operation_id": "op-fw", "sub_operation_id": "sub-1", "device_id": "dev-1"}
    steps = [testing.build("fwUpgradeStateChangeNotify", **key, step=s) for s in "123"]
    result = testing.build("fwUpgradeResultNotify", **key, status="SUCCESS", cur_version="2.0")
    other = testing.build("swUpgradeResultNotify", operation_id="op-sw", device_id="dev-2")
    with serve() as (url, _):
        post(url, *steps, result, other)
        upgrade = fetch(url, "/api/upgrades/op-fw", Page[UpgradeRecord])
        of_device = fetch(url, "/api/upgrades?device=dev-1", Page[UpgradeRecord])
        every = fetch(url, "/api/upgrades?limit=10", Page[UpgradeRecord])
    (record,) = upgrade["items"]
    assert (record["kind"], record["state"], record["raw_state"]) == ("fw", "updating", "3")
    assert (record["result"], record["cur_version"]) == ("SUCCESS", "2.0")
    assert [e["value"] for e in record["history"]] == ["1", "2", "3", "SUCCESS"]
    assert ids(of_device, "operation_id") == ["op-fw"]
    assert ids(every, "operation_id") == ["op-sw", "op-fw"]  # most recently updated first
    assert every["next"] is None


def upgrade_state(operation: str) -> Notification:
    return testing.build(
        "swUpgradeStateChangeNotify", operation_id=operation, sub_operation_id="s",
        device_id="dev-1", sw_upgrade_state="downloading",
    )  # fmt: skip


def test_upgrades_list_pages_with_next_through_ties_until_null(serve: Serve, db: str) -> None:
    async def received_at_one_time() -> None:
        async with open_inbox(db) as inbox:
            for operation in ["op-4", "op,/0", "op-2", "op-1", "op-3"]:
                await receive(inbox, upgrade_state(operation), 1000.0)

    run(received_at_one_time())
    with serve() as (url, _):
        post(url, upgrade_state("op-new"))  # updated now: the newest
        pages, query = [], {"limit": "2"}
        while len(pages) < 6:
            page = fetch(url, f"/api/upgrades?{urlencode(query)}", Page[UpgradeRecord])
            pages.append(ids(page, "operation_id"))
            if page["next"] is None:
                break
            query["after"] = page["next"]
    assert pages == [["op-new", "op,/0"], ["op-1", "op-2"], ["op-3", "op-4"], []]


# --- notifications ----------------------------------------------------------------------------


def test_notifications_list_entries_with_state_duplicates_and_body(serve: Serve) -> None:
    with serve() as (url, _):
        post(url, EXAMPLES["01-deviceAdded"], EXAMPLES["04-deviceDataChanged"])
        post(url, EXAMPLES["04-deviceDataChanged"], EXAMPLES["13-ruleEvent"])  # one repeated

        def states() -> list[str]:
            return [i["state"] for i in fetch(url, "/api/notifications")["items"]]

        wait_until(lambda: states() == ["done"] * 3, what="delivery")
        every = fetch(url, "/api/notifications", Page[NotificationItem])
        first, second, third = ids(every, "id")  # ids increase; a duplicate may use one up
        queries = ["type=deviceDataChanged", f"device={DEVICE}", "device=other", "since=1h",
                   "since=2999-01-01T00:00:00Z", "limit=2", f"limit=2&after={second}"]  # fmt: skip
        answers = {
            query: ids(fetch(url, f"/api/notifications?{query}", Page[NotificationItem]), "id")
            for query in queries
        }
        page = fetch(url, "/api/notifications?limit=2", Page[NotificationItem])
    data = every["items"][1]
    assert {k: data[k] for k in ("type", "device", "state", "attempts", "duplicates")} == {
        "type": "deviceDataChanged", "device": DEVICE, "state": "done", "attempts": 1,
        "duplicates": 1,
    }  # fmt: skip
    assert data["body"] == msgspec.json.decode(EXAMPLES["04-deviceDataChanged"])
    assert isinstance(data["received_at"], float)
    assert answers == {
        "type=deviceDataChanged": [second], f"device={DEVICE}": [first, second],
        "device=other": [], "since=1h": [first, second, third], "since=2999-01-01T00:00:00Z": [],
        "limit=2": [first, second], f"limit=2&after={second}": [third],
    }  # fmt: skip
    assert page["next"] == str(second)


# --- errors -----------------------------------------------------------------------------------

ERRORS = [
    ("GET", "/api/commands/nope", 404, "no command nope", "$"),
    ("GET", "/api/devices/nope", 404, "no device nope", "$"),
    ("GET", "/api/upgrades/nope", 404, "no upgrade operation nope", "$"),
    ("GET", "/api/nowhere", 404, "no endpoint at /api/nowhere", "$"),
    ("GET", "/api/commands/a/b", 404, "no endpoint at /api/commands/a/b", "$"),
    ("DELETE", "/api/nowhere", 404, "no endpoint", "$"),
    ("GET", "/api/commands?limit=0", 400, "limit must be 1..1000, got '0'", "limit"),
    ("GET", "/api/devices?limit=1001", 400, "limit must be 1..1000", "limit"),
    ("GET", "/api/notifications?limit=ten", 400, "limit must be 1..1000", "limit"),
    ("GET", "/api/upgrades?limit=-1", 400, "limit must be 1..1000", "limit"),
    ("GET", "/api/commands?limit=", 400, "limit must not be empty", "limit"),
    ("GET", "/api/commands?overdue=yes", 400, "overdue must be true or false", "overdue"),
    ("GET", "/api/devices?deleted=1", 400, "deleted must be true or false", "deleted"),
    ("GET", "/api/commands?state=bogus", 400, "state must be one of PENDING", "state"),
    ("GET", "/api/notifications?type=bogus", 400, "type must be a notifyType", "type"),
    ("GET", "/api/notifications?since=yesterday", 400, "expected a time", "since"),
    ("GET", "/api/notifications?after=abc", 400, "after must be a `next`", "after"),
    ("GET", "/api/upgrades?after=op-1", 400, "after must be a `next` of this list", "after"),
    ("GET", "/api/devices/d-1?commands=1001", 400, "commands must be 0..1000", "commands"),
    ("GET", "/api/commands?colour=red", 400, "unknown query parameter 'colour'", "colour"),
    ("GET", "/api/shadow/unsynced?device=d", 400, "unknown query parameter 'device'", "device"),
    ("GET", "/api/shadow/unsynced?after=d-1", 400, "after must be a `next` of this list", "after"),
    ("GET", "/api/shadow/unsynced?limit=0", 400, "limit must be 1..1000", "limit"),
    ("GET", "/api/devices?status=A&status=B", 400, "status must be given at most once", "status"),
    ("POST", "/api/commands", 405, "POST is not allowed", "$"),
    ("DELETE", "/api/devices/d-1", 405, "DELETE is not allowed", "$"),
    ("PUT", "/openapi.json", 405, "PUT is not allowed", "$"),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "error", "where"), ERRORS, ids=[f"{m} {p}" for m, p, *_ in ERRORS]
)
def test_api_bad_request_answers_status_and_json_error(
    empty: str, method: str, path: str, status: int, error: str, where: str
) -> None:
    response = httpx.request(method, empty + path)
    assert response.status_code == status
    body = msgspec.json.decode(response.content, type=Error)
    assert error in body.error
    assert body.path == where
    if status == 405:
        assert response.headers["allow"] == "GET, HEAD"


def test_api_head_answers_the_get_headers_without_a_body(empty: str) -> None:
    got, head = httpx.get(empty + "/api/devices"), httpx.head(empty + "/api/devices")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(got.content))
    assert got.json() == {"items": [], "next": None}


def test_api_store_failure_answers_503_and_logs(
    serve: Serve, db: str, caplog: pytest.LogCaptureFixture
) -> None:
    with serve() as (url, _):
        post(url, nb("c-1", "dev-1", "SENT"))
        path = Path(db.removeprefix("sqlite:///"))
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("DROP TABLE command_events")
        with caplog.at_level(logging.ERROR, logger="iotpush.api"):
            response = httpx.get(url + "/api/commands/c-1")
    assert response.status_code == 503
    assert response.json() == {"error": "the query failed; retry later", "path": "$"}
    assert response.headers["retry-after"] == "5"
    assert any("query /api/commands/c-1 failed" in r.getMessage() for r in caplog.records)


# --- the OpenAPI document ---------------------------------------------------------------------

SAMPLE_VALUES = {
    "device": "d-1", "state": "SENT", "overdue": "true", "status": "ONLINE", "deleted": "true",
    "type": "deviceAdded", "since": "2h", "limit": "5", "after": "1", "commands": "5",
}  # fmt: skip
SAMPLE_CURSORS = {  # the lists that page with a cursor of their own
    "/api/upgrades": "1795304123.7214675,6f702d31,73,642d31",
    "/api/shadow/unsynced": "642d31,446576696365",
}


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_openapi_document_describes_every_endpoint_and_resolves_every_ref(empty: str) -> None:
    document = fetch(empty, "/openapi.json")
    assert document == msgspec.json.decode(msgspec.json.encode(openapi()))
    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    assert {"title", "version"} <= document["info"].keys()
    schemas = document["components"]["schemas"]
    assert {"CommandRecord", "DeviceRecord", "DeviceView", "ShadowRecord", "UpgradeRecord",
            "NotificationItem", "MessageRecord", "TaskRecord",
            "Error"} <= schemas.keys()  # fmt: skip
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    assert set(document["paths"]) == {
        "/api/commands", "/api/commands/{id}", "/api/devices", "/api/devices/{id}",
        "/api/shadow/unsynced", "/api/upgrades", "/api/upgrades/{operationId}",
        "/api/notifications", "/api/messages/{id}", "/api/tasks/{id}", "/openapi.json",
    }  # fmt: skip
    for template, item in document["paths"].items():
        assert set(item) == {"get"}, template
        operation = item["get"]
        assert "200" in operation["responses"] and operation["operationId"], template
        path_params = [p["name"] for p in operation["parameters"] if p["in"] == "path"]
        assert path_params == re.findall(r"\{(\w+)\}", template)
        # Every documented parameter is accepted: with a sample of each, no 400 and no 405.
        cursor = {"after": SAMPLE_CURSORS[template]} if template in SAMPLE_CURSORS else {}
        samples = SAMPLE_VALUES | cursor
        query = "&".join(
            f"{p['name']}={samples[p['name']]}"
            for p in operation["parameters"]
            if p["in"] == "query"
        )
        path = re.sub(r"\{\w+\}", "x", template) + (f"?{query}" if query else "")
        expected = 404 if path_params else 200
        assert httpx.get(empty + path).status_code == expected, path
