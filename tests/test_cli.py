"""The operator commands, on a real SQLite file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpush import decode, open_inbox
from iotpush.cli import main
from iotpush.idempotency import key_and_slot
from iotpush.inbox import Incoming, Rejection
from tests.conftest import EXAMPLES, run


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A SQLite store holding: 04 done, 07 dead, 19 pending, and one quarantined body."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"

    async def fill() -> None:
        async with open_inbox(url) as inbox:
            now = time.time()
            for name in ("04-deviceDataChanged", "07-deviceDeleted", "19-nbCommandStatusChanged"):
                n = decode(EXAMPLES[name])
                key, slot = key_and_slot(n)
                item = Incoming(EXAMPLES[name], n.notify_type, n.device, key, slot, "/p", {}, now)
                await inbox.append(item)
            await inbox.claim("tester", 2, 60)
            await inbox.ack([1])
            await inbox.dead(2, "Traceback: RuntimeError: boom", 8)
            await inbox.quarantine(Rejection(now, "/p", 400, "bad", "$.x", b"{oops", {"a": "b"}))

    run(fill())
    return url


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_inbox_stats_counts_by_state_and_type(store: str) -> None:
    out = invoke("inbox", "stats", "--store", store)
    assert "entries: 3" in out
    assert "pending 1, claimed 0, done 1, dead 1" in out
    assert "deviceDeleted" in out
    assert "quarantined: 1" in out


def test_cli_inbox_ls_filters_by_state_and_type(store: str) -> None:
    dead = invoke("inbox", "ls", "--store", store, "--state", "dead")
    assert "deviceDeleted" in dead and "deviceDataChanged" not in dead
    typed = invoke("inbox", "ls", "--store", store, "--type", "deviceDataChanged", "--since", "1h")
    assert typed.count("\n") == 1 and "done" in typed
    assert "no entries match" in invoke("inbox", "ls", "--store", store, "--device", "nobody")


def test_cli_inbox_show_prints_error_and_body(store: str) -> None:
    out = invoke("inbox", "show", "2", "--store", store)
    assert "state: dead" in out
    assert "RuntimeError: boom" in out
    assert '"deviceDeleted"' in out


def test_cli_inbox_show_unknown_id_is_one_line_error(store: str) -> None:
    result = CliRunner().invoke(main, ["inbox", "show", "99", "--store", store])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: no inbox entry 99"


def test_cli_inbox_replay_defaults_to_dead_entries(store: str) -> None:
    assert "1 entries queued" in invoke("inbox", "replay", "--store", store)
    assert "pending 2, claimed 0, done 1, dead 0" in invoke("inbox", "stats", "--store", store)
    assert "1 entries queued" in invoke("inbox", "replay", "1", "--store", store)


def test_cli_inbox_purge_keeps_undelivered(store: str) -> None:
    out = invoke("inbox", "purge", "--before", "2099-01-01T00:00:00Z", "--store", store)
    assert "purged 3 records" in out  # done + dead + the quarantined body
    assert "pending 1, claimed 0, done 0, dead 0" in invoke("inbox", "stats", "--store", store)


def test_cli_bad_time_is_usage_error(store: str) -> None:
    result = CliRunner().invoke(main, ["inbox", "purge", "--before", "yesterday", "--store", store])
    assert result.exit_code == 2
    assert "expected a time" in result.output


def test_cli_quarantine_ls_and_show(store: str) -> None:
    listing = invoke("quarantine", "ls", "--store", store)
    assert "400" in listing and "$.x: bad" in listing
    shown = invoke("quarantine", "show", "1", "--store", store)
    assert "{oops" in shown and "header a: b" in shown


def test_cli_store_from_environment(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTPUSH_STORE", store)
    assert "entries: 3" in invoke("inbox", "stats")
