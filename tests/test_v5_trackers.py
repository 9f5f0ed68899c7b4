"""Trackers for v5 devices, through a real server and the query API: the same answers as for a
legacy device."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from iotpush import testing
from iotpush.trackers import CommandRecord
from iotpush.tracking import DeviceView
from tests.test_api import fetch

Serve = Callable[..., contextlib.AbstractContextManager[tuple[str, Any]]]
V5 = "/v5/forwarding"
DEVICE = "d5-meter-0001"
HEADER = {"header": {"device_id": DEVICE, "gateway_id": DEVICE}}


def post(url: str, pair: str, **overrides: Any) -> None:
    notify = overrides.pop("notify_data", {})
    n = testing.build(pair, notify_data={**HEADER, **notify}, **overrides)
    answer = httpx.post(
        url + V5, content=testing.encode(n), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text


def settled(url: str, path: str, check: Callable[[Any], bool]) -> Any:
    """The answer at ``path`` once ``check`` holds (trackers run as entries are kept)."""
    from tests.conftest import wait_until

    found: list[Any] = []

    def ready() -> bool:
        response = httpx.get(url + path)
        if response.status_code != 200:
            return False
        found[:] = [response.json()]
        return check(found[0])

    wait_until(ready, 10, path)
    return found[0]


def test_device_lifecycle_status_and_properties_answer_as_for_a_legacy_device(
    serve: Serve,
) -> None:
    created = {"device_name": "meter-1", "fw_version": "1.0", "node_type": "ENDPOINT"}
    online = {"status": "ONLINE", "last_online_time": "20261121T101500Z"}
    newer = [{"service_id": "Meter", "properties": {"reading": 2},
              "event_time": "2026-11-21T10:16:00.000Z"}]  # fmt: skip
    older = [
        {
            "service_id": "Meter",
            "properties": {"reading": 1, "valve": "open"},
            "event_time": 1795256100000,
        }
    ]  # 2026-11-21T10:15:00Z; fmt: skip
    with serve() as (url, _):
        post(url, "device:create", notify_data={"body": created})
        post(url, "device.status:update", notify_data={"body": online})
        post(url, "device.property:report", notify_data={"body": {"services": newer}})
        post(url, "device.property:report", notify_data={"body": {"services": older}})
        path = f"/api/devices/{DEVICE}"
        view = settled(url, path, lambda v: "valve" in v["device"]["data"].get("Meter", {}))
        fetch(url, path, DeviceView)
        device = view["device"]
        assert device["status"] == "ONLINE"
        assert device["node_type"] == "ENDPOINT"
        assert device["gateway_id"] == DEVICE
        assert device["info"]["name"] == "meter-1"
        assert device["info"]["fwVersion"] == "1.0"
        assert device["info"]["lastOnlineTime"] == "20261121T101500Z"
        assert device["deleted_at"] is None
        reading, valve = device["data"]["Meter"]["reading"], device["data"]["Meter"]["valve"]
        assert reading["value"] == 2  # the newer event time wins, though it came first
        assert reading["event_time"] == "20261121T101600Z"  # the legacy form
        assert valve["value"] == "open"
        assert valve["event_time"] == "20261121T101500Z"
        assert [d["device_id"] for d in fetch(url, "/api/devices?status=ONLINE")["items"]] == [
            DEVICE
        ]

        post(url, "device:update", notify_data={"body": {"fw_version": "1.1"}})
        view = settled(url, path, lambda v: v["device"]["info"]["fwVersion"] == "1.1")
        post(url, "device:delete", notify_data={"body": None})  # a header and no body
        deleted = settled(url, path, lambda v: v["device"]["deleted_at"] is not None)
        assert deleted["device"]["info"]["fwVersion"] == "1.1"  # soft-deleted: still answered
        assert fetch(url, "/api/devices")["items"] == []
        listed = fetch(url, "/api/devices?deleted=true")["items"]
        assert [d["device_id"] for d in listed] == [DEVICE]


@pytest.mark.parametrize(
    ("statuses", "final"),
    [
        (["SENT", "DELIVERED", "SUCCESSFUL", "DELIVERED"], "SUCCESSFUL"),
        (["PENDING", "TIMEOUT", "SUCCESSFUL"], "TIMEOUT"),
        (["DELIVERED", "SENT"], "DELIVERED"),
        (["SENT", "CANCELED", "FAILED"], "CANCELED"),
    ],
    ids=["late-delivered", "timeout-final", "no-step-back", "canceled-final"],
)
def test_command_status_updates_drive_the_command_state_machine(
    serve: Serve, statuses: list[str], final: str
) -> None:
    command = f"cmd-{final.lower()}-{len(statuses)}"
    with serve() as (url, _):
        post(url, "device:create")
        for i, status in enumerate(statuses):  # with request ids: a repeated status is no copy
            body = {"command_id": command, "status": status, "result": {"code": status}}
            post(url, "device.command.status:update", request_id=f"{command}-{i}",
                 notify_data={"body": body})  # fmt: skip
        path = f"/api/commands/{command}"
        record = settled(url, path, lambda r: len(r["history"]) == len(statuses))
        fetch(url, path, CommandRecord)
        assert record["state"] == final
        assert record["terminal"] == (final not in ("PENDING", "SENT", "DELIVERED"))
        assert record["device_id"] == DEVICE
        assert [e["code"] for e in record["history"]] == statuses
        assert {e["source"] for e in record["history"]} == {"device.command.status:update"}
        view = fetch(url, f"/api/devices/{DEVICE}")
        assert [c["command_id"] for c in view["commands"]] == [command]


def test_message_and_task_answer_through_the_api_and_the_cli(serve: Serve, db: str) -> None:
    from click.testing import CliRunner

    from iotpush.cli import main
    from iotpush.trackers.messages import MessageRecord
    from iotpush.trackers.tasks import TaskRecord

    error = {"error_code": 404, "error_msg": "no such topic"}
    with serve() as (url, _):
        for status in ("PENDING", "TIMEOUT"):
            body = {"message_id": "msg-9", "status": status, "timestamp": "20261121T101500Z"}
            if status == "TIMEOUT":
                body["error_info"] = error
            post(url, "device.message.status:update", notify_data={"body": body})
        for status in ("Waitting", "Success"):
            task = {"task_id": "task-7", "status": status, "task_type": "softwareUpgrade"}
            n = testing.build("batchtask:update", notify_data={"body": task})
            answer = httpx.post(url + V5, content=testing.encode(n))
            assert answer.status_code == 200
        record = settled(url, "/api/messages/msg-9", lambda r: len(r["history"]) == 2)
        fetch(url, "/api/messages/msg-9", MessageRecord)
        assert (record["status"], record["final"], record["error"]) == ("TIMEOUT", True, error)
        assert record["device_id"] == DEVICE
        assert record["history"][0]["status_time"] == "20261121T101500Z"
        progress = settled(url, "/api/tasks/task-7", lambda r: r["status"] == "Success")
        fetch(url, "/api/tasks/task-7", TaskRecord)
        assert progress["task_type"] == "softwareUpgrade"
        assert fetch(url, "/api/messages/nope", status=404)["error"] == "no message nope"
        assert fetch(url, "/api/tasks/nope", status=404)["error"] == "no batch task nope"
    shown = CliRunner().invoke(main, ["messages", "show", "msg-9", "--store", db])
    assert shown.exit_code == 0, shown.output
    assert "status: TIMEOUT (final)" in shown.output
    assert "no such topic" in shown.output
    shown = CliRunner().invoke(main, ["tasks", "show", "task-7", "--store", db])
    assert "status: Success (final)" in shown.output
    missing = CliRunner().invoke(main, ["messages", "show", "nope", "--store", db])
    assert missing.exit_code != 0
    assert missing.output.strip().splitlines()[-1].endswith("no message nope")
