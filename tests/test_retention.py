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


def purged_entries(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith('iotpush_purged_total{what="entries"}'):
            return float(line.split()[-1])
    return 0.0


def test_server_purges_delivered_entries_older_than_its_retention_by_itself(
    serve: Serve,
) -> None:
    n = testing.build("nbCommandStatusChanged", command_id="c1", device_id="d1")
    with serve(retention=0.2, purge_interval=0.05) as (url, _):
        assert testing.post(url + testing.path_for(n), n).status == 200
        wait_until(lambda: purged_entries(url) == 1, 10, "the entry to be purged")
        listed = httpx.get(url + "/api/notifications").json()
        command = httpx.get(url + "/api/commands/c1").json()
    assert listed["items"] == []
    assert command["state"] is not None  # its state stays, with the push that set it
    assert [event["entry_id"] for event in command["history"]] == [command["state_entry_id"]]


def test_startup_summary_names_the_retention() -> None:
    on = summary(Config(retention=30, purge_interval=5), default_receiver(), None)
    off = summary(Config(retention=None), default_receiver(), None)
    assert "retention: 30s, purged every 5s" in on
    assert "retention: off (everything is kept)" in off
