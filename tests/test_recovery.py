"""Quarantine recovery: refused bodies replayed through today's decoder and JSON bounds, on a real
SQLite file, from the library and from ``iotpush quarantine replay`` against a real server."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from iotpush import open_inbox
from iotpush._jsonlimits import JSONLimits
from iotpush.cli import main
from iotpush.inbox import Inbox, Rejection, Selection
from iotpush.recovery import QuarantineReplay, replay_quarantined, select_quarantined
from iotpush.tracking import Tracking
from tests.conftest import EXAMPLES, RECEIVE, run

ADDED = EXAMPLES["01-deviceAdded"]
DEVICE = "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"  # the spec examples' device
T0 = 1_795_000_000.0


def refused(body: bytes, status: int = 400, headers: dict[str, str] | None = None) -> Rejection:
    reason = "string longer than 10 characters"
    return Rejection(T0, RECEIVE, status, reason, "$.deviceId", body, headers or {})


def replay(db: str, *rejections: Rejection, **options: Any) -> tuple[list[QuarantineReplay], Any]:
    """Quarantine ``rejections``, replay them all; the outcomes, entries, quarantine, devices."""

    async def scenario(inbox: Inbox) -> tuple[list[QuarantineReplay], Any]:
        ids = [await inbox.quarantine(r) for r in rejections]
        results = await replay_quarantined(inbox, ids, **options)
        devices = [d.device_id for d in await Tracking(inbox).devices()]
        return results, (await inbox.find(Selection()), await inbox.quarantined(), devices)

    async def main() -> tuple[list[QuarantineReplay], Any]:
        async with open_inbox(db) as inbox:
            return await scenario(inbox)

    return run(main())


def test_replay_accepted_body_becomes_a_tracked_entry_with_its_receipt_time(db: str) -> None:
    results, (entries, quarantined, devices) = replay(db, refused(ADDED), limits=JSONLimits())
    assert [(r.outcome, r.entry) for r in results] == [("accepted", entries[0].id)]
    assert [(e.type, e.state, e.received_at, e.body) for e in entries] == [
        ("deviceAdded", "pending", T0, ADDED)
    ]
    assert entries[0].headers == {"x-iotpush-quarantined": "1"}
    assert quarantined == []
    assert devices == [DEVICE]


def test_replay_still_refused_stays_with_todays_reason(db: str) -> None:
    bad = ADDED.replace(b'"deviceId"', b'"deviceID"')
    results, (entries, quarantined, _) = replay(db, refused(bad), limits=JSONLimits())
    assert [r.outcome for r in results] == ["refused"]
    assert entries == []
    assert [(q.status, q.field) for q in quarantined] == [(400, "$")]
    assert "deviceId" in quarantined[0].reason
    assert quarantined[0].reason == results[0].reason


def test_replay_with_a_bound_still_too_low_keeps_the_bound_reason(db: str) -> None:
    results, (entries, quarantined, _) = replay(
        db, refused(ADDED), limits=JSONLimits(max_string=20)
    )
    assert [(r.outcome, r.reason) for r in results] == [
        ("refused", "string longer than 20 characters")
    ]
    assert entries == [] and quarantined[0].reason == "string longer than 20 characters"


@pytest.mark.parametrize(
    ("rejection", "why"),
    [
        (refused(ADDED[:100], status=413), "not received in full (413"),
        (refused(ADDED[:100], headers={"content-length": str(len(ADDED))}), "only 100 of its"),
        (refused(ADDED), "cut at --quarantine-max-body (64 bytes)"),
    ],
    ids=["over-max-body", "shorter-than-its-length", "quarantine-max-body"],
)
def test_replay_cut_body_is_not_replayed_and_says_so(
    db: str, rejection: Rejection, why: str
) -> None:
    results, (entries, quarantined, _) = replay(db, rejection, quarantine_max_body=64)
    assert [r.outcome for r in results] == ["cut"]
    assert why in results[0].reason
    assert entries == [] and quarantined[0] == dataclasses.replace(rejection, id=1)


def test_replay_dry_run_and_a_missing_id_change_nothing(db: str) -> None:
    async def scenario() -> tuple[list[QuarantineReplay], int, int]:
        async with open_inbox(db) as inbox:
            id = await inbox.quarantine(refused(ADDED))
            results = await replay_quarantined(inbox, [id, 99], dry_run=True)
            return results, len(await inbox.find(Selection())), len(await inbox.quarantined())

    results, entries, quarantined = run(scenario())
    assert [r.outcome for r in results] == ["accepted", "missing"]
    assert (entries, quarantined) == (0, 1)


def test_select_quarantined_filters_by_time_and_status(db: str) -> None:
    async def scenario() -> list[int]:
        async with open_inbox(db) as inbox:
            await inbox.quarantine(refused(ADDED))
            await inbox.quarantine(Rejection(T0 + 10, RECEIVE, 400, "r", "$", b"{}", {}))
            await inbox.quarantine(Rejection(T0 + 20, RECEIVE, 403, "r", "$", b"{}", {}))
            return [
                *await select_quarantined(inbox, since=T0 + 5),
                *await select_quarantined(inbox, until=T0 + 5),
                *await select_quarantined(inbox, status=403),
            ]

    assert run(scenario()) == [2, 3, 1, 3]


def quarantine_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["quarantine", *args], env=env, catch_exceptions=False)


def test_cli_quarantine_replay_after_a_limit_was_raised_accepts_the_push(
    serve: Any, db: str
) -> None:
    with serve(max_string=10) as (url, _):  # a bound set too low: the push is refused, kept
        assert httpx.post(url + RECEIVE, content=ADDED).status_code == 400
    # Still too low in the environment serve reads: still refused, with today's reason.
    low = quarantine_cli("replay", "--yes", "--store", db, env={"IOTPUSH_SERVE_MAX_STRING": "12"})
    assert low.exit_code == 0, low.output
    assert "refused 1" in low.output and "string longer than 12 characters" in low.output
    dry = quarantine_cli("replay", "1", "--dry-run", "--store", db)
    assert dry.output.startswith("would replay 1 refused bodies\n  accepted 1\n")
    done = quarantine_cli("replay", "1", "--yes", "--store", db)
    assert done.output.endswith("     1  accepted   entry 1\naccepted 1\n")
    assert quarantine_cli("ls", "--store", db).output == "quarantine is empty\n"
    with serve() as (url, _):  # the server delivers and tracks it like any other
        body = httpx.get(url + f"/api/devices/{DEVICE}").json()
    assert body["device"]["device_id"] == DEVICE


def test_cli_quarantine_replay_without_terminal_or_yes_refuses(db: str) -> None:
    async def keep() -> None:
        async with open_inbox(db) as inbox:
            await inbox.quarantine(refused(ADDED))

    run(keep())
    result = CliRunner().invoke(main, ["quarantine", "replay", "--store", db])
    assert result.exit_code == 1
    assert result.output.startswith("Error: not going to replay 1 refused bodies")
