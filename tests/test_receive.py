"""The receive endpoint's events: what it accepted, refused (and why) and answered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from iotpush import Config, create_app, testing
from iotpush.events import (
    REFUSAL_REASONS,
    Answered,
    Committed,
    Event,
    Events,
    Received,
    Refused,
)
from tests.conftest import EXAMPLES, Recorder, Tally, run

DELETED = EXAMPLES["07-deviceDeleted"]
DEVICE = json.loads(DELETED)["deviceId"]


def deliver_all(store: str, requests: list[tuple[bytes, dict[str, Any]]], **config: Any) -> Tally:
    """Deliver ``requests`` (body, `testing.deliver` options) in process; the events seen."""
    server = create_app(Config(receiver=Recorder(), store=store, **config))
    tally = Tally(server.events)

    async def main() -> None:
        async with testing.lifespan(server):
            for body, options in requests:
                await testing.deliver(server, body, **options)

    run(main())
    return tally


def test_receive_accepted_push_emits_received_committed_and_answered(tmp_path: Path) -> None:
    tally = deliver_all(f"sqlite:///{tmp_path / 'i.db'}", [(DELETED, {}), (DELETED, {})])
    first, again = [e for e in tally.seen if isinstance(e, Received)]
    assert (first.type, first.device_id, first.duplicate) == ("deviceDeleted", DEVICE, False)
    assert (again.entry_id, again.duplicate) == (first.entry_id, True)
    assert [e.status for e in tally.seen if isinstance(e, Answered)] == [200, 200]
    assert sum(e.count for e in tally.seen if isinstance(e, Committed)) >= 2


@pytest.mark.parametrize(
    ("body", "options", "status", "reason", "path"),
    [
        (b'{"notifyType": ', {}, 400, "bad_json", "$"),
        (b"[]", {}, 400, "bad_json", "$"),
        (b'{"notifyType": "fooBar"}', {}, 400, "unknown_type", "$.notifyType"),
        (b'{"notifyType": "deviceDeleted", "deviceId": "d"}', {}, 400, "invalid", "$"),
        (b"{}", {"headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type", "$"),
        (b"x" * 2000, {}, 413, "too_large", "$"),
        (b'{"x": [[[[[[1]]]]]]}', {}, 400, "too_deep", "$.x[0][0][0]"),
        (DELETED, {"method": "PUT"}, 405, "method_not_allowed", "$"),
        (DELETED, {"path": "/elsewhere"}, 404, "not_found", "$"),
    ],
    ids=["malformed", "not-object", "unknown-type", "missing-member", "media-type", "too-large",
         "too-deep", "method", "no-route"],
)  # fmt: skip
def test_receive_each_refusal_emits_its_reason(
    tmp_path: Path, body: bytes, options: dict[str, Any], status: int, reason: str, path: str
) -> None:
    tally = deliver_all(
        f"sqlite:///{tmp_path / 'i.db'}", [(body, options)], max_body=1000, max_depth=4
    )
    [refused] = [e for e in tally.seen if isinstance(e, Refused)]
    assert (refused.status, refused.reason, refused.path) == (status, reason, path)
    assert refused.reason in REFUSAL_REASONS
    assert tally(Received) == 0


def test_receive_unknown_notify_type_answer_names_type_and_path() -> None:
    async def main() -> Any:
        server = create_app(Config(receiver=Recorder(), store="memory://"))
        async with testing.lifespan(server):
            return await testing.deliver(server, b'{"notifyType": "fooBar", "deviceId": "d"}')

    response = run(main())
    assert response.status == 400
    assert response.json() == {"error": "unknown notifyType 'fooBar'", "path": "$.notifyType"}


def test_receive_unobserved_pipeline_emits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted: list[Event] = []
    emit = Events.emit

    def counting(self: Events, event: Event) -> None:
        if isinstance(event, Answered | Received | Refused | Committed):  # the receive path's
            emitted.append(event)
        emit(self, event)

    monkeypatch.setattr(Events, "emit", counting)

    def push_twice(observed: bool) -> int:
        store = f"sqlite:///{tmp_path / 'i.db'}"
        server = create_app(
            Config(
                receiver=Recorder(), store=store, console=False, metrics=False,
                alert_failures_in_a_row=0,
            )  # nothing that listens to the receive path
        )  # fmt: skip
        if observed:
            server.events.subscribe(lambda event: None, Answered, Received, Refused, Committed)

        async def main() -> None:
            async with testing.lifespan(server):
                await testing.deliver(server, DELETED)
                await testing.deliver(server, b"[]")

        emitted.clear()
        run(main())
        return len(emitted)

    # Observed: Answered twice, Received, Refused and Committed (once or twice).
    assert push_twice(observed=False) == 0
    assert push_twice(observed=True) >= 5
