"""The operator commands, on a real SQLite file."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from iotpush import decode, open_inbox
from iotpush.cli import main
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
                item = Incoming.from_notification(
                    n, body=EXAMPLES[name], path="/p", headers={}, received_at=now
                )
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


def counts(store: str) -> list[str]:
    """``inbox stats`` without the age of the oldest entry (it moves with the clock)."""
    out = invoke("inbox", "stats", "--store", store)
    return [line for line in out.splitlines() if not line.startswith("oldest")]


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
    assert typed.count("\n") == 2 and "done" in typed  # the header and one entry
    assert "no entries match" in invoke("inbox", "ls", "--store", store, "--device", "nobody")


def test_cli_inbox_ls_has_a_header_aligned_columns_and_says_how_many_more(store: str) -> None:
    async def add_long_type() -> None:
        async with open_inbox(store) as inbox:
            long = "deviceDesiredPropertiesModifyStatusChanged"
            await inbox.append(Incoming(b"{}", long, "dev-long", "k", "k", "/p", {}, time.time()))

    run(add_long_type())
    first = invoke("inbox", "ls", "--limit", "3", "--store", store).splitlines()
    assert first[0].split() == ["id", "received", "state", "attempts", "type", "device"]
    assert len(first) == 5
    assert first[-1] == "... 1 more: add --after 3 for the next page"
    rest = invoke("inbox", "ls", "--limit", "3", "--after", "3", "--store", store).splitlines()
    assert len(rest) == 2 and rest[1].endswith("dev-long")
    for page in (first[:4], rest):  # each device starts under its header, whatever the type
        at = page[0].index("device")
        assert all(row[at - 2 : at] == "  " and row[at] != " " for row in page[1:])


def test_cli_inbox_ls_counts_the_entries_after_its_page_up_to_a_bound(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iotpush.cli import inbox

    monkeypatch.setattr(inbox, "MORE_COUNTED", 1)  # 2 more after the first entry
    over = invoke("inbox", "ls", "--limit", "1", "--store", store).splitlines()
    assert over[-1] == "... over 1 more: add --after 1 for the next page"
    exact = invoke("inbox", "ls", "--limit", "2", "--store", store).splitlines()
    assert exact[-1] == "... 1 more: add --after 2 for the next page"


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
    assert "1 entries queued" in invoke("inbox", "replay", "--yes", "--store", store)
    assert "pending 2, claimed 0, done 1, dead 0" in invoke("inbox", "stats", "--store", store)
    assert "1 entries queued" in invoke("inbox", "replay", "1", "--yes", "--store", store)


def test_cli_inbox_replay_by_type_takes_dead_entries_only(store: str) -> None:
    # 04 deviceDataChanged was delivered: a filter alone must not deliver it again.
    out = invoke("inbox", "replay", "--type", "deviceDataChanged", "--yes", "--store", store)
    assert out == "nothing to replay\n"
    dead = invoke("inbox", "replay", "--type", "deviceDeleted", "--yes", "--store", store)
    assert "will replay 1 entries" in dead and "by state: dead 1" in dead
    done = ["--type", "deviceDataChanged", "--state", "done", "--yes", "--store", store]
    assert "1 entries queued" in invoke("inbox", "replay", *done)
    assert "pending 3, claimed 0, done 0, dead 0" in invoke("inbox", "stats", "--store", store)


@pytest.mark.parametrize(
    "command",
    [
        ["inbox", "replay"],
        ["inbox", "purge", "--before", "2099-01-01"],
        ["quarantine", "purge", "--before", "2099-01-01"],
    ],
    ids=["replay", "purge", "quarantine-purge"],
)
def test_cli_destructive_command_without_terminal_or_yes_refuses_in_one_line(
    store: str, command: list[str]
) -> None:
    before = counts(store)
    result = CliRunner().invoke(main, [*command, "--store", store])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: not going to ")
    assert "pass --yes" in result.output
    assert counts(store) == before


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["inbox", "replay"], "would replay 1 entries"),
        (["inbox", "purge", "--before", "2099-01-01"], "would purge 2 entries received before"),
        (["quarantine", "purge", "--before", "2099-01-01"], "would purge 1 refused bodies"),
    ],
    ids=["replay", "purge", "quarantine-purge"],
)
def test_cli_destructive_command_dry_run_counts_and_changes_nothing(
    store: str, command: list[str], expected: str
) -> None:
    before = counts(store)
    out = invoke(*command, "--dry-run", "--store", store)
    assert out.startswith(expected)
    assert counts(store) == before


def on_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run ``iotpush ARGS`` on a pseudo-terminal that types ``answer``; its exit code and output."""
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "iotpush.cli", *args],
        stdin=child_fd, stdout=child_fd, stderr=child_fd, close_fds=True,
    )  # fmt: skip
    os.close(child_fd)
    os.write(main_fd, answer.encode() + b"\n")  # waits in the terminal until the prompt reads it
    chunks = []
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    return proc.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.mark.parametrize(("answer", "code", "dead"), [("n", 1, 1), ("y", 0, 0)], ids=["no", "yes"])
def test_cli_replay_on_a_terminal_shows_the_count_and_asks(
    store: str, answer: str, code: int, dead: int
) -> None:
    status, out = on_terminal(["inbox", "replay", "--store", store], answer)
    assert "will replay 1 entries" in out and "deviceDeleted" in out
    assert "Go on? [y/N]" in out
    assert status == code
    assert f"done 1, dead {dead}" in invoke("inbox", "stats", "--store", store)


def test_cli_inbox_purge_keeps_undelivered_and_the_quarantine(store: str) -> None:
    out = invoke("inbox", "purge", "--before", "2099-01-01T00:00:00Z", "--yes", "--store", store)
    assert "purged 2 entries" in out  # done + dead
    stats = invoke("inbox", "stats", "--store", store)
    assert "pending 1, claimed 0, done 0, dead 0" in stats
    assert "quarantined: 1" in stats


def test_cli_quarantine_purge_deletes_refused_bodies_only(store: str) -> None:
    old = invoke("quarantine", "purge", "--before", "2000-01-01", "--yes", "--store", store)
    assert old == "nothing to purge\n"
    out = invoke("quarantine", "purge", "--before", "2099-01-01", "--yes", "--store", store)
    assert "purged 1 refused bodies" in out
    assert "quarantine is empty" in invoke("quarantine", "ls", "--store", store)
    assert "entries: 3" in invoke("inbox", "stats", "--store", store)


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


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["serve", "--bogus"], "'--host'? (see 'iotpush serve --help')"),
        (["inbox", "ls", "--limit", "x"], "valid integer range. (see 'iotpush inbox ls --help')"),
        (["bogus"], "No such command 'bogus'. (see 'iotpush --help')"),
        (["send", "--cacert", "a", "--insecure", "h"], "(see 'iotpush send --help')"),
    ],
    ids=["option", "value", "command", "raised-by-a-command"],
)
def test_cli_usage_error_is_one_line_naming_the_help(args: list[str], error: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="iotpush")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert error in result.output


def test_cli_group_without_its_command_still_shows_its_help() -> None:
    result = CliRunner().invoke(main, ["inbox"])
    assert result.exit_code == 2
    assert "Commands:" in result.output and "purge" in result.output
