"""Retention in a real server: rounds run by themselves every ``--purge-interval``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import httpx

from iotpush import Config, testing
from iotpush._startup import summary
from iotpush.receiver import default_receiver
from tests.conftest import wait_until

Serve = Callable[..., contextlib.AbstractContextManager[tuple[str, Any]]]


def purged(url: str, what: str = "entries") -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'iotpush_purged_total{{what="{what}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_server_purges_delivered_entries_older_than_its_retention_by_itself(
    serve: Serve,
) -> None:
    n = testing.build("nbCommandStatusChanged", command_id="c1", device_id="d1")
    with serve(retention=0.2, purge_interval=0.05) as (url, _):
        assert testing.post(url + testing.path_for(n), n).status == 200
        wait_until(lambda: purged(url) == 1, 10, "the entry to be purged")
        listed = httpx.get(url + "/api/notifications").json()
        command = httpx.get(url + "/api/commands/c1").json()
    assert listed["items"] == []
    assert command["state"] is not None  # its state stays, with the push that set it
    assert [event["entry_id"] for event in command["history"]] == [command["state_entry_id"]]


def test_startup_summary_names_the_retention() -> None:
    on = summary(Config(retention=30, purge_interval=5), default_receiver(), None)
    off = summary(Config(retention=None), default_receiver(), None)
    kept = summary(Config(retention=30, finished_retention=None), default_receiver(), None)
    assert "retention: 30s, finished records 30d, purged every 5s" in on
    assert "retention: 30s, finished records kept, purged every 5m" in kept
    assert "retention: off (everything is kept)" in off


def test_server_deletes_finished_records_after_their_retention_and_the_api_says_404(
    serve: Serve,
) -> None:
    done = testing.build("nbCommandStatusChanged", command_id="c1", device_id="d1",
                         result={"result_code": "SUCCESSFUL", "result_detail": None})  # fmt: skip
    sent = testing.build("nbCommandStatusChanged", command_id="c2", device_id="d1",
                         result={"result_code": "SENT", "result_detail": None})  # fmt: skip
    with serve(retention=0.2, finished_retention=0.3, purge_interval=0.05) as (url, _):
        for n in (done, sent):
            assert testing.post(url + testing.path_for(n), n).status == 200
        wait_until(lambda: purged(url, "finished_commands") == 1, 10, "the command to go")
        gone = httpx.get(url + "/api/commands/c1")
        open_ = httpx.get(url + "/api/commands/c2")
    assert gone.status_code == 404
    assert open_.status_code == 200 and open_.json()["state"] == "SENT"  # open: never deleted
