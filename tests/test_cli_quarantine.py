"""``iotpush quarantine replay`` and what it adds to `iotpush.quarantine`: today's reason kept,
bodies shorter than their length refused, selection by filter; a real server and SQLite file."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from iotpush import open_inbox
from iotpush._jsonlimits import JSONLimits
from iotpush.cli import main
from iotpush.inbox import Rejection, Selection
from iotpush.quarantine import (
    QuarantineReplay,
    decode_for_path,
    replay_quarantined,
    select_quarantined,
)
from tests.conftest import EXAMPLES, RECEIVE, run

ADDED = EXAMPLES["01-deviceAdded"]
DEVICE = "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"  # the spec examples' device
T0 = 1_795_000_000.0


def refused(body: bytes, status: int = 400, headers: dict[str, str] | None = None) -> Rejection:
    reason = "string longer than 10 characters"
    return Rejection(T0, RECEIVE, status, reason, "$.deviceId", body, headers or {})


def replay(db: str, rejection: Rejection, **options: Any) -> tuple[QuarantineReplay, Any]:
    """Quarantine ``rejection`` and replay it; the outcome, the entries and the quarantine."""

    async def main() -> tuple[QuarantineReplay, Any]:
        async with open_inbox(db) as inbox:
            id = await inbox.quarantine(rejection)
            options.setdefault("max_body", 1 << 20)
            result = await replay_quarantined(inbox, id, decode_for_path, **options)
            return result, (await inbox.find(Selection()), await inbox.quarantined())

    return run(main())


def test_replay_still_refused_keeps_todays_reason_in_the_record(db: str) -> None:
    result, (entries, quarantined) = replay(db, refused(ADDED), limits=JSONLimits(max_string=20))
    assert (result.entry_id, result.reason) == (None, "string longer than 20 characters")
    assert entries == []
    assert [(q.status, q.reason) for q in quarantined] == [(400, result.reason)]


@pytest.mark.parametrize(
    "rejection",
    [
        refused(ADDED[:100], status=413),
        refused(ADDED[:100], headers={"Content-Length": str(len(ADDED))}),
        refused(ADDED[:100], status=408),
    ],
    ids=["over-max-body", "shorter-than-its-length", "too-slow"],
)
def test_replay_body_kept_incomplete_is_not_replayed(db: str, rejection: Rejection) -> None:
    result, (entries, quarantined) = replay(db, rejection)
    assert result.entry_id is None and "cut when it was kept" in str(result.reason)
    assert entries == [] and quarantined[0].reason == rejection.reason  # left as it was


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
    # Still too low in the variable serve reads: still refused, with today's reason.
    low = quarantine_cli("replay", "--yes", "--store", db, env={"IOTPUSH_SERVE_MAX_STRING": "12"})
    assert low.exit_code == 0, low.output
    assert "refused    $.deviceId: string longer than 12 characters" in low.output
    assert "string longer than 12" in quarantine_cli("ls", "--store", db).output
    assert quarantine_cli("replay", "1", "--dry-run", "--store", db).output == (
        "would replay 1 refused bodies\n"
    )
    done = quarantine_cli("replay", "1", "--yes", "--store", db)
    assert done.output.endswith("     1  accepted   entry 1\naccepted 1, still refused 0\n")
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
