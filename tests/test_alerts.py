"""`iotpush.alerts`: the log lines an operator must see before the platform gives up."""

from __future__ import annotations

import logging

import pytest

from iotpush.alerts import Alerts
from iotpush.events import Answered, Dead, Events, Received


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "iotpush.alerts" and r.levelno == level
    ]


def test_alerts_failures_in_a_row_log_an_error_naming_the_blacklist(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = Events()
    Alerts(events, failures_in_a_row=3)
    caplog.set_level(logging.INFO, "iotpush.alerts")
    for status, seconds in ((503, 0.1), (500, 0.1), (400, 0.1)):  # a 4xx counts neither way
        events.emit(Answered(status, seconds, 0.0))
    assert lines(caplog, logging.ERROR) == []
    events.emit(Answered(200, 15.5, 0.0))  # too late for the platform: a failure
    (error,) = lines(caplog, logging.ERROR)
    assert error.startswith("3 answers in a row were failures for the platform (the last: 200")
    assert "blacklists the callback URL after 10 failures in a row" in error
    events.emit(Answered(200, 0.01, 0.0))
    assert lines(caplog, logging.INFO) == ["answering 200 again after 3 failures in a row"]


def test_alerts_failures_repeat_at_each_multiple(caplog: pytest.LogCaptureFixture) -> None:
    events = Events()
    alerts = Alerts(events, failures_in_a_row=2)
    caplog.set_level(logging.INFO, "iotpush.alerts")
    for _ in range(5):
        events.emit(Answered(503, 0.01, 0.0))
    assert [line.split(" ", 1)[0] for line in lines(caplog, logging.ERROR)] == ["2", "4"]
    assert alerts.failures == 5


def test_alerts_zero_failures_in_a_row_never_logs(caplog: pytest.LogCaptureFixture) -> None:
    events = Events()
    Alerts(events, failures_in_a_row=0)
    for _ in range(20):
        events.emit(Answered(503, 0.01, 0.0))
    assert lines(caplog, logging.ERROR) == []


def test_alerts_no_push_for_warns_once_then_says_when_pushes_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    events = Events()
    alerts = Alerts(events, no_push_for=600, clock=clock)
    caplog.set_level(logging.INFO, "iotpush.alerts")
    clock.now += 599
    alerts.check()
    assert lines(caplog, logging.WARNING) == []
    clock.now += 2
    alerts.check()
    alerts.check()
    (warning,) = lines(caplog, logging.WARNING)
    assert warning.startswith("no push arrived for 601 s (since 2027-01-15T08:00:00.000Z)")
    events.emit(Received(1, "deviceAdded", "d", False, clock.now))
    assert lines(caplog, logging.INFO) == ["pushes arrive again, after 601 s without any"]


def test_alerts_dead_letters_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    events = Events()
    alerts = Alerts(events, dead_interval=60, clock=clock)
    for entry in range(1, 6):
        events.emit(Dead(entry, "deviceAdded", "d", 8, "app.store", "Traceback...\nValueError: x"))
        clock.now += 1
    assert len(lines(caplog, logging.WARNING)) == 1  # the first, at once
    alerts.check()
    assert len(lines(caplog, logging.WARNING)) == 1  # the rest wait for the interval
    clock.now += 60
    alerts.check()
    first, rest = lines(caplog, logging.WARNING)
    assert first.startswith("1 entry dead-lettered (the last: entry 1, deviceAdded, handler")
    assert rest.startswith("4 entries dead-lettered (the last: entry 5, deviceAdded, handler")
    assert "app.store after 8 attempt(s): ValueError: x)" in rest
    record = [r for r in caplog.records if r.name == "iotpush.alerts"][-1]
    assert (record.entry_id, record.handler, record.attempt) == (5, "app.store", 8)  # type: ignore[attr-defined]
