"""The command tracker: state machine, history, idempotence, expectations and the watchdog."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotpush import testing
from iotpush.models import Notification
from iotpush.trackers import (
    CommandRecord,
    apply_all,
    count_commands,
    count_overdue,
    expect,
    find_commands,
    get_command,
    next_state,
    normalise,
    overdue,
    recent_commands,
)
from tests.conftest import tracker_db

CODES = [
    "PENDING", "SENT", "DELIVERED", "SUCCESSFUL", "FAILED", "TIMEOUT", "EXPIRED", "CANCELED",
    "SUCCESS", "FAIL", "success", "Delivered", "sent", "executed", "BOGUS",
]  # fmt: skip
TERMINAL = {"SUCCESSFUL", "FAILED", "TIMEOUT", "EXPIRED", "CANCELED"}
PROPERTY = settings(max_examples=150, deadline=None)


@pytest.fixture
def db(tracker_conn: sqlite3.Connection) -> sqlite3.Connection:
    """Each test runs on SQLite and on PostgreSQL (`tests.conftest.tracker_conn`)."""
    return tracker_conn


@contextlib.contextmanager
def fresh(factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """A new database file per hypothesis example."""
    with contextlib.closing(tracker_db(factory.mktemp("commands") / "t.db")) as conn:
        yield conn


def nb(code: str, command: str = "c1", device: str = "d1", detail: Any = None) -> Notification:
    result = {"result_code": code, "result_detail": detail}
    return testing.build(
        "nbCommandStatusChanged", command_id=command, device_id=device, result=result
    )


def fold(codes: list[str], state: str | None = None) -> str | None:
    """The reference: ``next_state`` folded over codes in arrival order."""
    for code in codes:
        state = next_state(state, code)
    return state


def state_of(db: sqlite3.Connection, command: str = "c1") -> str | None:
    record = get_command(db, command)
    assert record is not None
    return record.state


# --- the pure rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("SUCCESS", "SUCCESSFUL"), ("success", "SUCCESSFUL"), ("Successful", "SUCCESSFUL"),
        ("FAIL", "FAILED"), ("fail", "FAILED"), ("delivered", "DELIVERED"), ("sent", "SENT"),
        ("executed", "SUCCESSFUL"), (" TIMEOUT ", "TIMEOUT"), ("BOGUS", None), ("", None),
        (None, None),
    ],
    ids=lambda v: repr(v),
)  # fmt: skip
def test_normalise_aliases_and_case_give_the_state(code: str | None, state: str | None) -> None:
    assert normalise(code) == state


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (None, "SENT", "SENT"),
        (None, "BOGUS", None),
        ("PENDING", "DELIVERED", "DELIVERED"),
        ("SENT", "success", "SUCCESSFUL"),
        ("DELIVERED", "SENT", "DELIVERED"),
        ("DELIVERED", "DELIVERED", "DELIVERED"),
        ("DELIVERED", "PENDING", "DELIVERED"),
        ("SUCCESSFUL", "FAILED", "SUCCESSFUL"),
        ("FAILED", "SUCCESS", "FAILED"),
        ("EXPIRED", "DELIVERED", "EXPIRED"),
        ("SENT", "BOGUS", "SENT"),
    ],
    ids=[
        "first-state", "unknown-first", "skip-sent", "alias-to-terminal", "late-lower",
        "equal-rank", "late-pending", "terminal-kept", "first-terminal-wins",
        "terminal-ignores-lower", "unknown-ignored",
    ],
)  # fmt: skip
def test_next_state_follows_the_ranks(current: str | None, incoming: str, expected: str) -> None:
    assert next_state(current, incoming) == expected


@given(st.sampled_from([None, *CODES]), st.lists(st.sampled_from(CODES)))
def test_next_state_once_terminal_stays(start: str | None, codes: list[str]) -> None:
    state = next_state(start, "CANCELED")
    assert state in TERMINAL
    assert fold(codes, state) == state


# --- applying pushes --------------------------------------------------------------------------


def schedule(n: int, dups: list[tuple[int, int]]) -> list[int]:
    """Entry indexes in arrival order, with re-deliveries of earlier entries mixed in."""
    keyed = [(i, 0, i) for i in range(n)] + [(max(pos, i), 1, i) for i, pos in dups if i < n]
    return [index for *_, index in sorted(keyed)]


@PROPERTY
@given(data=st.data())
def test_apply_any_arrival_order_with_duplicates_equals_fold_of_next_state(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    codes = data.draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=7), "codes")
    arrival = data.draw(st.permutations(codes), "arrival")
    dups = data.draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 7)), max_size=4))
    pushes = [nb(code) for code in arrival]
    with fresh(tmp_path_factory) as db:
        applied: set[int] = set()
        terminal: str | None = None
        for index in schedule(len(pushes), dups):
            before = get_command(db, "c1")
            apply_all(db, index + 1, 1000.0 + index, pushes[index])
            after = get_command(db, "c1")
            if index in applied:
                assert after == before  # the same entry again changes nothing
            applied.add(index)
            assert after is not None
            if terminal is not None:
                assert after.state == terminal  # a terminal state never changes
            elif after.terminal:
                terminal = after.state
        record = get_command(db, "c1")
        assert record is not None
        expected = fold(arrival)
        assert record.state == expected
        assert record.terminal == (expected in TERMINAL)
        assert [e.entry_id for e in record.history] == list(range(1, len(arrival) + 1))
        assert [e.code for e in record.history] == list(arrival)


@PROPERTY
@given(data=st.data())
def test_apply_in_any_application_order_gives_the_fold_in_entry_id_order(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    codes = data.draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=7), "codes")
    order = data.draw(st.permutations(range(len(codes))), "application order")
    with fresh(tmp_path_factory) as db:
        for index in order:  # entry ids say the arrival order, whatever the application order
            apply_all(db, index + 1, 1000.0 + index, nb(codes[index]))
        record = get_command(db, "c1")
        assert record is not None
        assert record.state == fold(codes)
        assert record.created_at == 1000.0
        assert record.updated_at == 1000.0 + len(codes) - 1
        if record.state is not None:
            setter = next(e for e in record.history if e.entry_id == record.state_entry_id)
            assert setter.applied and normalise(setter.code) == record.state


def test_apply_keeps_the_detail_of_the_push_that_set_the_state(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, nb("SENT", detail="None"))
    apply_all(db, 2, 11.0, nb("SUCCESSFUL", detail={"light_state": 1}))
    apply_all(db, 3, 12.0, nb("DELIVERED", detail={"reason": "late"}))
    record = get_command(db, "c1")
    assert record is not None
    assert (record.state, record.detail, record.state_at) == (
        "SUCCESSFUL",
        {"light_state": 1},
        11.0,
    )
    assert [(e.detail, e.applied) for e in record.history] == [
        ("None", True), ({"light_state": 1}, True), ({"reason": "late"}, False),
    ]  # fmt: skip


def test_apply_unknown_code_is_recorded_but_not_applied(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, nb("DELIVERED"))
    apply_all(db, 2, 11.0, nb("WEIRD"))
    record = get_command(db, "c1")
    assert record is not None
    assert record.state == "DELIVERED"
    assert [(e.code, e.state, e.applied) for e in record.history][-1] == ("WEIRD", None, False)


def test_apply_mqtt_confirmations_and_response_track_the_request(db: sqlite3.Connection) -> None:
    header = {"request_id": "r1", "from_": "/devices/d9/services/Switch"}
    apply_all(db, 1, 10.0, testing.build("messageConfirm", header={**header, "status": "sent"}))
    assert state_of(db, "r1") == "SENT"
    apply_all(
        db, 2, 11.0, testing.build("messageConfirm", header={**header, "status": "delivered"})
    )
    assert state_of(db, "r1") == "DELIVERED"
    body = {"result": "ok", "state": "ON"}
    rsp = testing.build("commandRsp", header={"request_id": "r1", "device_id": "d9"}, body=body)
    apply_all(db, 3, 12.0, rsp)
    record = get_command(db, "r1")
    assert record is not None
    assert (record.state, record.detail, record.device_id) == ("SUCCESSFUL", body, "d9")
    assert [(e.source, e.code) for e in record.history] == [
        ("messageConfirm", "sent"), ("messageConfirm", "delivered"), ("commandRsp", None),
    ]  # fmt: skip


def test_apply_message_confirm_executed_is_successful(db: sqlite3.Connection) -> None:
    header = {"request_id": "r2", "status": "executed"}
    apply_all(db, 1, 10.0, testing.build("messageConfirm", header=header))
    assert state_of(db, "r2") == "SUCCESSFUL"


def test_apply_untracked_type_leaves_no_command(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, testing.build("deviceEvent"))
    assert find_commands(db) == []


# --- expectations and the watchdog ------------------------------------------------------------


def test_expect_new_command_is_pending_with_its_deadline(db: sqlite3.Connection) -> None:
    expect(db, "c1", "d1", deadline=160.0, now=100.0)
    record = get_command(db, "c1")
    assert record is not None
    assert (record.state, record.deadline, record.device_id) == ("PENDING", 160.0, "d1")
    assert (record.created_at, record.updated_at, record.terminal) == (100.0, 100.0, False)


def test_expect_known_command_keeps_its_state(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 100.0, nb("DELIVERED"))
    expect(db, "c1", "d1", deadline=300.0, now=101.0)
    record = get_command(db, "c1")
    assert record is not None
    assert (record.state, record.deadline, record.state_entry_id) == ("DELIVERED", 300.0, 1)


def test_expect_again_replaces_the_deadline_only(db: sqlite3.Connection) -> None:
    expect(db, "c1", "d1", deadline=160.0, now=100.0)
    apply_all(db, 1, 110.0, nb("SENT"))
    expect(db, "c1", "d1", deadline=500.0, now=120.0)
    record = get_command(db, "c1")
    assert record is not None
    assert (record.state, record.deadline, record.expected_at) == ("SENT", 500.0, 100.0)


def test_overdue_lists_passed_deadlines_without_a_terminal_state(db: sqlite3.Connection) -> None:
    expect(db, "late", "d1", deadline=200.0, now=100.0)
    expect(db, "later", "d1", deadline=300.0, now=100.0)
    expect(db, "done", "d1", deadline=150.0, now=100.0)
    apply_all(db, 1, 120.0, nb("SUCCESS", command="done"))
    apply_all(db, 2, 130.0, nb("DELIVERED", command="unexpected"))
    assert overdue(db, now=199.0) == []
    assert overdue(db, now=200.0) == []  # at the deadline it has not passed yet
    assert [r.command_id for r in overdue(db, now=250.0)] == ["late"]
    assert [r.command_id for r in overdue(db, now=1000.0)] == ["late", "later"]
    assert [count_overdue(db, t) for t in (199.0, 200.0, 250.0, 1000.0)] == [0, 0, 1, 2]
    apply_all(db, 3, 260.0, nb("TIMEOUT", command="late"))
    assert [r.command_id for r in overdue(db, now=1000.0)] == ["later"]
    assert count_overdue(db, 1000.0) == 1


def test_record_overdue_agrees_with_the_query(db: sqlite3.Connection) -> None:
    expect(db, "c1", "d1", deadline=200.0, now=100.0)
    record = get_command(db, "c1")
    assert record is not None
    assert not record.overdue(200.0)
    assert record.overdue(200.5)
    apply_all(db, 1, 150.0, nb("FAILED"))
    record = get_command(db, "c1")
    assert record is not None
    assert not record.overdue(1000.0)


# --- queries ----------------------------------------------------------------------------------


def test_get_command_unknown_is_none(db: sqlite3.Connection) -> None:
    assert get_command(db, "nope") is None


def test_find_commands_filters_by_device_state_and_overdue(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, nb("SUCCESS", command="a", device="d1"))
    apply_all(db, 2, 11.0, nb("SENT", command="b", device="d1"))
    apply_all(db, 3, 12.0, nb("SENT", command="c", device="d2"))
    expect(db, "c", "d2", deadline=50.0, now=12.0)

    def ids(records: list[CommandRecord]) -> list[str]:
        return [r.command_id for r in records]

    assert ids(find_commands(db)) == ["a", "b", "c"]
    assert ids(find_commands(db, device="d1")) == ["a", "b"]
    assert ids(find_commands(db, state="success")) == ["a"]
    assert ids(find_commands(db, state="SENT", device="d2")) == ["c"]
    assert ids(find_commands(db, overdue_at=51.0)) == ["c"]
    assert ids(find_commands(db, overdue_at=49.0)) == []


def test_find_commands_pages_by_command_id(db: sqlite3.Connection) -> None:
    names = [f"cmd-{i:02d}" for i in range(7)]
    for i, name in enumerate(reversed(names)):
        apply_all(db, i + 1, 10.0 + i, nb("SENT", command=name))
    seen: list[str] = []
    after: str | None = None
    while page := find_commands(db, limit=3, after=after):
        assert len(page) <= 3
        seen += [r.command_id for r in page]
        after = page[-1].command_id
    assert seen == names
    assert all(len(r.history) == 1 for r in find_commands(db, limit=3))


def test_recent_commands_newest_first_ties_by_id_and_counted(db: sqlite3.Connection) -> None:
    updates = [("c-old", "d1", 10.0), ("c-b", "d1", 30.0), ("c-a", "d1", 30.0),
               ("c-mid", "d1", 20.0), ("c-other", "d2", 40.0)]  # fmt: skip
    for i, (command, device, at) in enumerate(updates):
        apply_all(db, i + 1, at, nb("SENT", command=command, device=device))
    expect(db, "c-new", "d1", deadline=99.0, now=35.0)  # an expectation counts too

    def ids(records: list[CommandRecord]) -> list[str]:
        return [r.command_id for r in records]

    assert ids(recent_commands(db, "d1")) == ["c-new", "c-a", "c-b", "c-mid", "c-old"]
    assert ids(recent_commands(db, "d1", limit=2)) == ["c-new", "c-a"]
    assert ids(recent_commands(db, "d-none")) == []
    assert (count_commands(db, "d1"), count_commands(db, "d2"), count_commands(db, "x")) == (
        5, 1, 0,
    )  # fmt: skip


@pytest.mark.parametrize("limit", [0, -1, 1001], ids=["zero", "negative", "too-big"])
def test_find_commands_bad_limit_raises(db: sqlite3.Connection, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        find_commands(db, limit=limit)


def test_command_record_encodes_as_json(db: sqlite3.Connection) -> None:
    apply_all(db, 1, 10.0, nb("SUCCESSFUL", detail={"light_state": 1}))
    record = get_command(db, "c1")
    assert record is not None
    encoded = msgspec.json.decode(msgspec.json.encode(record))
    assert encoded["state"] == "SUCCESSFUL"
    assert encoded["history"][0]["detail"] == {"light_state": 1}
    assert msgspec.json.decode(msgspec.json.encode(record), type=CommandRecord) == record
