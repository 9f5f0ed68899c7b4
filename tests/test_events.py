"""The event surface: typed events to subscribed listeners, nothing when nobody listens."""

from __future__ import annotations

import logging

import pytest

from iotpush.events import REFUSAL_REASONS, Dead, Events, Received, Refused


def _received(entry_id: int = 1) -> Received:
    return Received(entry_id, "deviceAdded", "d1", duplicate=False, at=0.0)


def test_events_subscriber_of_a_type_gets_only_that_type() -> None:
    events, seen = Events(), []
    events.subscribe(seen.append, Received)
    events.emit(_received())
    events.emit(Dead(2, "deviceAdded", "d1", 8, "app.h", "ValueError: x"))
    assert seen == [_received()]


def test_events_subscriber_of_no_type_gets_every_type() -> None:
    events, seen = Events(), []
    events.subscribe(seen.append)
    dead = Dead(2, "deviceAdded", "d1", 8, "app.h", "ValueError: x")
    events.emit(_received())
    events.emit(dead)
    assert seen == [_received(), dead]


def test_events_wants_is_false_until_someone_listens_and_after_unsubscribe() -> None:
    events = Events()
    assert not events.wants(Received)
    unsubscribe = events.subscribe(print, Received)
    assert events.wants(Received) and not events.wants(Dead)
    unsubscribe()
    assert not events.wants(Received)


def test_events_failing_listener_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, seen = Events(), []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    events.subscribe(broken, Received)
    events.subscribe(seen.append, Received)
    with caplog.at_level(logging.ERROR, "iotpush.events"):
        events.emit(_received())
    assert seen == [_received()]
    assert "event listener" in caplog.text and "boom" in caplog.text


def test_events_subscribe_to_a_foreign_type_is_refused() -> None:
    with pytest.raises(TypeError, match="not an iotpush event type"):
        Events().subscribe(print, int)


def test_refusal_reasons_are_a_fixed_set_of_label_values() -> None:
    assert "unknown_type" in REFUSAL_REASONS and "busy" in REFUSAL_REASONS
    assert all(reason.isidentifier() and reason.islower() for reason in REFUSAL_REASONS)
    refused = Refused("invalid", 400, "expected str, got null", "$.result", "/x")
    assert refused.reason in REFUSAL_REASONS
