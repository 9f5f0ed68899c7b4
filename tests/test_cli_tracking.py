"""The tracker commands (commands, devices, trackers rebuild) on a real SQLite file."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner, Result

from iotpush import Notification, decode, open_inbox, testing
from iotpush.cli import main
from iotpush.retention import Retention
from iotpush.trackers import FINISHED, HISTORIES, CommandRecord, DeviceRecord
from iotpush.tracking import DeviceView, Tracking
from tests.conftest import EXAMPLES, run
from tests.test_tracking import nb, receive

DEVICE = "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"  # the spec examples' device
SPEC = ["01-deviceAdded", "03-deviceInfoChanged", "04-deviceDataChanged",
        "14-deviceDesiredPropertiesModifyStatusChanged", "08-messageConfirm",
        "09-commandRsp"]  # fmt: skip


def fill(store: str, pushes: list[Notification], late: tuple[str, str] | None = None) -> None:
    """Append ``pushes`` as the app would; register ``late`` (command, device) long overdue."""

    async def append_all() -> None:
        async with open_inbox(store) as inbox:
            for index, push in enumerate(pushes):
                await receive(inbox, push, 1_795_000_000.0 + index)
            if late is not None:
                await Tracking(inbox, clock=lambda: 1000.0).expect(*late, timeout=60)

    run(append_all())


@pytest.fixture
def store(db: str) -> str:
    """The spec's device (registry, data, shadow, two commands); d-1 and d-2 (deleted) with NB-IoT
    commands c-1 (SUCCESSFUL, then a late DELIVERED) and c-2 (FAILED); c-3 expected, overdue."""
    spec = [decode(EXAMPLES[name]) for name in SPEC]
    commands = [nb("c-1", "d-1", "SENT"), nb("c-1", "d-1", "SUCCESSFUL"),
                nb("c-1", "d-1", "DELIVERED"), nb("c-2", "d-2", "FAILED")]  # fmt: skip
    added = [testing.build("deviceAdded", device_id="d-1", device_info={"status": "ONLINE"}),
             testing.build("deviceAdded", device_id="d-2", device_info={"status": "OFFLINE"}),
             testing.build("deviceDeleted", device_id="d-2")]  # fmt: skip
    fill(db, [*spec, *commands, *added], late=("c-3", "d-1"))
    return db


def invoke(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def first_words(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()]


# --- commands ---------------------------------------------------------------------------------


def test_commands_show_prints_state_detail_and_history(store: str) -> None:
    out = invoke("commands", "show", "c-1", "--store", store).stdout
    lines = out.splitlines()
    assert lines[:3] == ["command: c-1", "device: d-1", "state: SUCCESSFUL (final)"]
    assert "deadline: -" in lines
    history = lines[lines.index("history (3):") + 1 :]
    assert [line.split()[3] for line in history] == ["SENT", "SUCCESSFUL", "DELIVERED"]
    assert [line.endswith("(not applied: late or unknown)") for line in history] == [
        False, False, True,
    ]  # fmt: skip


def test_commands_show_json_prints_the_record_the_library_returns(store: str) -> None:
    out = invoke("commands", "show", "1006", "--json", "--store", store).stdout
    record = msgspec.json.decode(out, type=CommandRecord)

    async def read() -> CommandRecord:
        async with open_inbox(store) as inbox:
            return await Tracking(inbox).command("1006")

    assert record == run(read())
    assert (record.state, record.detail) == ("SUCCESSFUL", {"result": "ok"})


@pytest.mark.parametrize(
    "args",
    [["commands", "show", "nope"], ["devices", "show", "nope"]],
    ids=["command", "device"],
)
def test_show_unknown_id_exits_1_with_one_error_line(store: str, args: list[str]) -> None:
    result = invoke(*args, "--store", store, code=1)
    assert result.stderr == f"Error: no {args[0][:-1]} nope\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("options", "listed"),
    [
        ([], ["1005", "1006", "c-1", "c-2", "c-3"]),
        (["--device", "d-1"], ["c-1", "c-3"]),
        (["--state", "failed"], ["c-2"]),
        (["--overdue"], ["c-3"]),
        (["--limit", "2", "--after", "1006"], ["c-1", "c-2"]),
        (["--device", "nobody"], ["no"]),
    ],
    ids=["all", "device", "state", "overdue", "page", "none"],
)
def test_commands_ls_lists_matching_commands_by_id(
    store: str, options: list[str], listed: list[str]
) -> None:
    out = invoke("commands", "ls", "--store", store, *options).stdout
    assert first_words(out) == listed


def test_commands_ls_marks_overdue_and_prints_json(store: str) -> None:
    text = invoke("commands", "ls", "--store", store, "--device", "d-1").stdout
    assert [line.endswith("OVERDUE") for line in text.splitlines()] == [False, True]
    out = invoke("commands", "ls", "--store", store, "--state", "PENDING", "--json").stdout
    (record,) = msgspec.json.decode(out, type=list[CommandRecord])
    assert (record.command_id, record.deadline) == ("c-3", 1060.0)


def test_commands_ls_limit_out_of_range_is_a_usage_error(store: str) -> None:
    result = invoke("commands", "ls", "--store", store, "--limit", "0", code=2)
    assert "--limit" in result.stderr


def test_commands_ls_unknown_state_lists_the_states_and_fails(store: str) -> None:
    result = invoke("commands", "ls", "--store", store, "--state", "BOGUS", code=2)
    last = result.stderr.strip().splitlines()[-1]
    assert "'--state'" in last and "'BOGUS' is not one of PENDING, SENT, DELIVERED" in last


# --- devices ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "listed"),
    [
        ([], [DEVICE, "d-1"]),
        (["--deleted"], [DEVICE, "d-1", "d-2"]),
        (["--status", "OFFLINE", "--deleted"], ["d-2"]),
        (["--limit", "1"], [DEVICE]),
        (["--status", "ABNORMAL"], ["no"]),
    ],
    ids=["live", "deleted", "status", "limit", "none"],
)
def test_devices_ls_lists_matching_devices_by_id(
    store: str, options: list[str], listed: list[str]
) -> None:
    out = invoke("devices", "ls", "--store", store, *options).stdout
    assert first_words(out) == listed


def test_devices_ls_shows_status_and_when_deleted(store: str) -> None:
    out = invoke("devices", "ls", "--store", store, "--deleted").stdout
    d2 = out.splitlines()[-1].split()
    assert d2[:3] == ["d-2", "OFFLINE", "ENDPOINT"]
    assert d2[-2] == "deleted"
    records = msgspec.json.decode(
        invoke("devices", "ls", "--store", store, "--json").stdout, type=list[DeviceRecord]
    )
    assert [(r.device_id, r.status) for r in records] == [(DEVICE, "ONLINE"), ("d-1", "ONLINE")]


def test_devices_show_prints_info_latest_data_shadow_and_commands(store: str) -> None:
    out = invoke("devices", "show", DEVICE, "--store", store).stdout
    lines = out.splitlines()
    assert lines[:3] == [f"device: {DEVICE}", "status: ONLINE", "node type: GATEWAY"]
    for expected in ["  nodeId: 862177041314827", "  statusDetail: NONE",
                     "  Brightness.brightness = 80  (event 2015-12-12T12:12:12.000Z)"]:  # fmt: skip
        assert expected in lines
    shadow = lines[lines.index("shadow:") + 1]
    assert shadow.startswith("  Device: DELIVERED, synced  {")
    commands = lines[lines.index("commands:") + 1 :]
    assert [line.split()[:2] for line in commands] == [  # most recently updated first
        ["1006", "SUCCESSFUL"],
        ["1005", "DELIVERED"],
    ]


def test_devices_show_commands_limits_them_and_says_how_to_list_all(store: str) -> None:
    out = invoke("devices", "show", DEVICE, "--commands", "1", "--store", store).stdout
    lines = out.splitlines()
    header = (
        f"commands: the 1 most recently updated of 2 (all: iotpush commands ls --device {DEVICE})"
    )
    assert [line.split()[:2] for line in lines[lines.index(header) + 1 :]] == [
        ["1006", "SUCCESSFUL"]
    ]
    none = invoke("devices", "show", DEVICE, "--commands", "0", "--json", "--store", store).stdout
    view = msgspec.json.decode(none, type=DeviceView)
    assert (view.commands, view.commands_total) == ([], 2)
    result = invoke("devices", "show", DEVICE, "--commands", "1001", "--store", store, code=2)
    assert "--commands" in result.output


def test_devices_show_json_prints_the_device_view(store: str) -> None:
    out = invoke("devices", "show", "d-2", "--json", "--store", store).stdout
    view = msgspec.json.decode(out, type=DeviceView)
    assert (view.device.status, view.device.deleted_at) == ("OFFLINE", 1_795_000_000.0 + 12)
    assert [c.command_id for c in view.commands] == ["c-2"]


def test_store_comes_from_iotpush_store(store: str) -> None:
    result = CliRunner().invoke(main, ["devices", "show", "d-1"], env={"IOTPUSH_STORE": store})
    assert result.exit_code == 0, result.output
    assert "status: ONLINE" in result.stdout


# --- trackers rebuild -------------------------------------------------------------------------


def test_trackers_rebuild_restores_lost_state_with_progress_on_stderr(store: str) -> None:
    before = invoke("devices", "show", DEVICE, "--json", "--store", store).stdout
    path = Path(store.removeprefix("sqlite:///"))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("DELETE FROM devices")
        conn.execute("DELETE FROM device_data")
    invoke("devices", "show", DEVICE, "--store", store, code=1)
    result = invoke("trackers", "rebuild", "--batch", "5", "--yes", "--store", store)
    assert result.stdout.startswith("will rebuild the trackers (0 devices, ")
    assert result.stdout.endswith("rebuilt the trackers from 13 notifications\n")
    assert "\rapplied 5 notifications..." in result.stderr
    assert "\rapplied 13 notifications..." in result.stderr
    assert invoke("devices", "show", DEVICE, "--json", "--store", store).stdout == before


def test_trackers_rebuild_dry_run_counts_records_and_notifications_and_changes_nothing(
    store: str,
) -> None:
    before = invoke("devices", "show", DEVICE, "--json", "--store", store).stdout
    out = invoke("trackers", "rebuild", "--dry-run", "--store", store).stdout
    first = out.splitlines()[0]
    assert first.startswith(
        "would rebuild the trackers (3 devices, 5 commands, 1 shadows, 0 upgrades)"
    )
    assert first.endswith(" from 13 kept notifications")
    assert invoke("devices", "show", DEVICE, "--json", "--store", store).stdout == before


def test_trackers_rebuild_without_terminal_or_yes_refuses_in_one_line(store: str) -> None:
    result = invoke("trackers", "rebuild", "--store", store, code=1)
    assert result.output.startswith("Error: not going to rebuild the trackers (3 devices, ")
    assert result.output.count("\n") == 1


def test_trackers_rebuild_after_purge_refuses_unless_discard_purged(store: str) -> None:
    async def deliver_all() -> None:
        async with open_inbox(store) as inbox:
            await inbox.ack([e.id for e in await inbox.claim("w", 100, 60)])

    run(deliver_all())
    purge = invoke("inbox", "purge", "--before", "2099-01-01", "--yes", "--store", store).stdout
    assert "the trackers used 13 of them: `trackers rebuild` will refuse after" in purge
    before = invoke("devices", "ls", "--store", store).stdout
    refused = invoke("trackers", "rebuild", "--yes", "--store", store, code=1)
    assert refused.output.startswith("Error: the trackers used 13 notifications that were purged")
    assert refused.output.rstrip().endswith("; --discard-purged rebuilds from the kept ones only")
    assert refused.output.count("\n") == 1
    assert invoke("devices", "ls", "--store", store).stdout == before  # nothing was lost
    dry = invoke("trackers", "rebuild", "--dry-run", "--store", store).stdout
    assert "losing what 13 purged notifications said" in dry
    discard = ["trackers", "rebuild", "--discard-purged", "--yes", "--store", store]
    assert invoke(*discard).stdout.endswith("rebuilt the trackers from 0 notifications\n")


def test_trackers_rebuild_says_how_many_finished_records_finished_retention_deleted(
    store: str,
) -> None:
    async def drop_finished() -> int:
        async with open_inbox(store) as inbox:
            round = await Retention(
                inbox, HISTORIES, keep=1.0, finished=FINISHED, finished_keep=1.0,
                clock=lambda: 4e9,
            ).purge()  # fmt: skip
            return sum(n for what, n in round.purged.items() if what.startswith("finished_"))

    dropped = run(drop_finished())
    assert dropped > 0
    dry = invoke("trackers", "rebuild", "--dry-run", "--store", store).stdout
    assert f"finished-retention deleted {dropped} finished records (" in dry
    assert "a rebuild brings back only what the kept notifications say of them" in dry
