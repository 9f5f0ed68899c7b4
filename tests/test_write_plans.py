"""The SQLite inbox's receive and delivery statements read through the indexes meant for them:
their plans, not their timing.

On a store of millions of entries a statement that reads the wrong index still answers right,
only slower with every entry kept (the per-device check of the hot handoff once read every entry
the device ever sent), so the plans are pinned here.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from iotpush.inbox import _migrations
from iotpush.inbox._sqlite_sql import BLOCKED, CLAIM, EXPIRE, SLOT

PLANS: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "blocked": (BLOCKED, ("dev-1", "me"), ("inbox_open_device",)),
    "claim": (
        CLAIM,
        {"owner": "me", "lease": 1.0, "now": 0.0, "limit": 10},
        ("inbox_pending", "inbox_open_device"),
    ),
    "expire": (EXPIRE, {"now": 0.0, "owner": "me"}, ("inbox_claimed",)),
    "slot": (SLOT, (b"\0" * 16,), ("sqlite_autoindex_inbox_1 (dedupe=?)",)),
}


def _plan(path: Path, sql: str, params: Any) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    finally:
        conn.close()


@pytest.mark.parametrize("name", list(PLANS))
def test_receive_and_delivery_statement_reads_its_index(tmp_path: Path, name: str) -> None:
    path = tmp_path / "inbox.db"
    _migrations.upgrade(f"sqlite:///{path}")
    sql, params, indexes = PLANS[name]
    plan = _plan(path, sql, params)
    for index in indexes:
        assert index in plan, plan
    assert not re.search(r"^SCAN inbox$", plan, re.MULTILINE), plan
    assert "inbox_device " not in plan, plan  # every entry of the device, not the open ones
