"""What the operator sees at start-up and in the readiness probe reads through indexes: the
plans of their statements, not their timing.

The start-up summary (`overview.read_backlog`) and `/health/ready`'s sink backlog
(`overview.read_unpublished`) run on a real store of each SQL backend; each statement they send
is recorded and its plan read as `tests.test_api_plans` does. A whole count of the inbox (a
`RowCount`'s first, a ``count(*)`` by state) would pass for a fine plan on SQLite (a range of
the primary key), so the statements are pinned to their partial indexes, and the start-up is
checked to leave no `RowCount` behind.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from iotpush import overview, testing
from iotpush.inbox._sqlbase import SQLInbox
from iotpush.server import Config, create_app
from tests._inbox import InboxFactory
from tests.test_api_plans import SQL_BACKENDS, _plan, _Recording, _scans

# Each statement of the reading, by what it counts, and the index its plan must read.
BACKLOG = {
    "state = 'pending'": "inbox_pending",
    "state = 'claimed'": "inbox_claimed",
    "state = 'dead'": "inbox_dead",
    "FROM outbox": "outbox",
}


def _statements(inbox_factory: InboxFactory, read: Any) -> tuple[list[tuple[str, str]], bool]:
    """(statement, plan) of each statement ``read(inbox)`` sends, on a store of the backend."""

    async def scenario() -> tuple[list[tuple[str, str]], bool]:
        async with inbox_factory(outbox=["nats"]) as inbox:
            assert isinstance(inbox, SQLInbox)
            sqlite = type(inbox).__name__ == "SQLiteInbox"
            recorded: list[tuple[str, Any]] = []
            plain = inbox.read

            async def recording(fn: Any) -> Any:
                def run(db: Any) -> Any:
                    into = _Recording(db)
                    try:
                        return fn(into)
                    finally:
                        recorded.extend(into.statements)

                return await plain(run)

            inbox.read = recording  # type: ignore[method-assign]
            await read(inbox)
            inbox.read = plain  # type: ignore[method-assign]
            plans = await inbox.read(
                lambda db: [(sql, _plan(db, sqlite, sql, params)) for sql, params in recorded]
            )
            return plans, sqlite

    found: tuple[list[tuple[str, str]], bool] = asyncio.run(scenario())
    return found


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
def test_startup_backlog_reads_each_state_through_its_partial_index(
    inbox_factory: InboxFactory,
) -> None:
    plans, sqlite = _statements(inbox_factory, overview.read_backlog)
    assert len(plans) == len(BACKLOG), plans
    for what, index in BACKLOG.items():
        [plan] = [plan for sql, plan in plans if what in sql]
        assert index in plan, plan
        if what != "FROM outbox":  # its rows are the backlog: a scan of it reads only that
            assert _scans(plan, sqlite) == [], plan
    assert not any(re.search(r"\bid > ", sql) for sql, _ in plans), plans  # no `RowCount`


@pytest.mark.parametrize("inbox_factory", SQL_BACKENDS, indirect=True)
def test_ready_probe_backlog_reads_the_outbox_alone(inbox_factory: InboxFactory) -> None:
    plans, _ = _statements(inbox_factory, overview.read_unpublished)
    assert [sql for sql, _ in plans] == [overview._UNPUBLISHED]
    assert "inbox" not in plans[0][1]


def test_startup_summary_counts_no_whole_table(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool]:
        app = create_app(Config(store=f"sqlite:///{tmp_path / 'inbox.db'}"))
        async with testing.lifespan(app):
            started_without = app.inbox not in overview._counts
            await overview.read_entries(app.inbox)  # the metrics' reading: it keeps one
            return started_without, app.inbox in overview._counts

    started_without, kept_after = asyncio.run(scenario())
    assert started_without
    assert kept_after  # the check above can fail
