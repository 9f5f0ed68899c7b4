"""The SQLite inbox's dedupe index: event slots ordered by the time their key names, state slots
by their plain digest, and a store upgraded from plain digests still recognising what it kept
before (migration 10). The dedupe contract itself is in ``tests/test_inbox_contract_entries.py``."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from iotpush.inbox import _migrations
from iotpush.inbox._sqlbase import slot_digest
from iotpush.inbox.sqlite import SQLiteInbox
from tests._inbox import RECEIVE, T0, FakeClock, incoming


def _dedupe(path: Path) -> dict[str, bytes | None]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT key, dedupe FROM inbox ORDER BY id").fetchall())


def test_sqlite_event_slot_digest_leads_with_its_time_state_slot_is_plain(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "inbox.db"

    async def scenario() -> None:
        async with SQLiteInbox(path, clock=clock) as inbox:
            for key, order in (("late", T0 + 30), ("early", T0 + 10), ("mid", T0 + 20)):
                await inbox.append(incoming(clock, key, order=order))
            await inbox.append(incoming(clock, "on", slot="registry:dev-1"))

    asyncio.run(scenario())
    held = _dedupe(path)
    for key, order in (("late", T0 + 30), ("early", T0 + 10), ("mid", T0 + 20)):
        digest = held[key]
        assert digest is not None
        assert digest[:4] == int(order).to_bytes(4, "big")
        assert digest[4:] == slot_digest(key)[:12]
    assert held["on"] == slot_digest("registry:dev-1")
    events = [held[k] or b"" for k in ("early", "mid", "late")]
    assert events == sorted(events)  # in the index, in the order of their times


def _store_at_9_with_an_event(path: Path, key: str, received_at: float) -> None:
    _migrations.upgrade(f"sqlite:///{path}", to=9)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "INSERT INTO inbox (received_at, type, device, key, dedupe, path, body, headers,"
            " state, due_at) VALUES (?, 'deviceDataChanged', 'dev-1', ?, ?, ?, x'7b7d', '{}',"
            " 'pending', ?)",
            (received_at, key, slot_digest(key), RECEIVE, received_at),
        )


def test_sqlite_upgraded_store_recognises_an_event_kept_with_a_plain_digest(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "inbox.db"
    _store_at_9_with_an_event(path, "a", T0)
    clock.advance(10)

    async def scenario() -> tuple[bool, bool, bool, int]:
        async with SQLiteInbox(path, clock=clock, dedupe_window=60.0) as inbox:
            again = await inbox.append(incoming(clock, "a", order=T0 - 5))
            other = await inbox.append(incoming(clock, "b", order=T0 - 5))
            clock.advance(100)  # past the window of every entry kept with a plain digest
            late = await inbox.append(incoming(clock, "a", order=T0 - 5))
            return again.duplicate, other.duplicate, late.duplicate, again.id

    again, other, late, id = asyncio.run(scenario())
    assert (again, id) == (True, 1)
    assert not other
    assert not late
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT received_before FROM plain_digests").fetchall() == [(T0,)]
        assert conn.execute("SELECT duplicates FROM inbox WHERE id = 1").fetchone() == (1,)


def test_sqlite_fresh_store_has_no_entry_kept_with_a_plain_digest(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    _migrations.upgrade(f"sqlite:///{path}")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM plain_digests").fetchone() == (0,)
