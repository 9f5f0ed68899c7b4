"""Quarantine replay: a refused body through today's decoder and bounds, into the inbox."""

from __future__ import annotations

import pytest

from iotpush import EntryNotFound, Rejection, decode, open_inbox, testing
from iotpush._jsonlimits import JSONLimits
from iotpush.inbox import Inbox
from iotpush.quarantine import QuarantineReplay, replay_quarantined
from tests.conftest import RECEIVE, run

RECEIVED_AT = 1_790_000_000.0
HEADERS = {"content-type": "application/json", "authorization": "Bearer secret", "host": "x"}


def reject(body: bytes, reason: str = "nested deeper than 3", status: int = 400) -> Rejection:
    return Rejection(RECEIVED_AT, RECEIVE, status, reason, "$.service.data", body, HEADERS)


def decode_for(path: str, body: bytes) -> object:
    assert path == RECEIVE
    return decode(body)


async def replay(inbox: Inbox, id: int, **options: object) -> QuarantineReplay:
    options = {"max_body": 1 << 20, "limits": JSONLimits(32, 1000, 65536), **options}
    return await replay_quarantined(inbox, id, decode_for, **options)  # type: ignore[arg-type]


def test_replay_quarantined_accepts_a_body_valid_today_with_its_receipt_time_once() -> None:
    body = testing.encode(testing.build("deviceDataChanged", device_id="meter-1"))

    async def scenario() -> tuple[QuarantineReplay, QuarantineReplay, object]:
        async with open_inbox("memory://") as inbox:
            id = await inbox.quarantine(reject(body))
            first, again = await replay(inbox, id), await replay(inbox, id)
            return first, again, await inbox.get(1)

    first, again, entry = run(scenario())
    assert first == QuarantineReplay(1, entry_id=1)
    assert str(first) == "Accepted as entry 1: it will be delivered and tracked."
    assert (again.entry_id, again.duplicate) == (1, True)
    assert entry.received_at == RECEIVED_AT and entry.device == "meter-1"  # type: ignore[attr-defined]
    assert entry.headers == {"content-type": "application/json", "host": "x"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "options", "status", "reason"),
    [
        (b'{"notifyType": "deviceDataChanged"}', {}, 400, "missing required field `deviceId`"),
        (b'{"a": {"b": {"c": {}}}}', {"limits": JSONLimits(2, 0, 0)}, 400, "nested deeper than 2"),
        (b"{" + b" " * 99, {"max_body": 50}, 400, "body larger than 50 bytes"),
        (b"{" + b" " * 99, {"kept_max_body": 100}, 400, "cut when it was kept"),
        (b"{", {}, 413, "cut when it was kept"),
    ],
    ids=["invalid", "too-deep", "too-large", "cut", "413"],
)
def test_replay_quarantined_refuses_again_saying_why(
    body: bytes, options: dict[str, object], status: int, reason: str
) -> None:
    async def scenario() -> tuple[QuarantineReplay, int]:
        async with open_inbox("memory://") as inbox:
            id = await inbox.quarantine(reject(body, status=status))
            replayed = await replay(inbox, id, **options)
            return replayed, (await inbox.stats()).total

    replayed, kept = run(scenario())
    assert replayed.entry_id is None and kept == 0
    assert reason in f"{replayed.reason} {replayed.field}"
    assert str(replayed).startswith("Still refused: ")


def test_replay_quarantined_unknown_id_raises_entry_not_found() -> None:
    async def scenario() -> None:
        async with open_inbox("memory://") as inbox:
            await replay(inbox, 7)

    with pytest.raises(EntryNotFound):
        run(scenario())
