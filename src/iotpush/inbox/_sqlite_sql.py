"""The SQL of the SQLite inbox: schema, statements, and selections turned into clauses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from . import Selection, _sqlbase
from ._sqlbase import COLUMNS, slot_digest

__all__ = [
    "BLOCKED",
    "CLAIM",
    "DUPLICATE",
    "EXPIRE",
    "INSERT",
    "OPEN_ELSEWHERE",
    "OUTBOX_ADD",
    "OUTBOX_TAKE",
    "PLAIN_BEFORE",
    "SCHEMA",
    "SLOT",
    "clustered",
    "ordered_digest",
    "where",
]

# Tracker tables the SQLite migrations make WITHOUT ROWID: clustered by their key, so the rows
# a page reads together lie together (a device's latest values). PostgreSQL has no such layout.
CLUSTERED = ("device_data",)


def clustered(script: str) -> str:
    """The trackers' (portable) ``script`` with the `CLUSTERED` tables ``WITHOUT ROWID``, as the
    SQLite migrations write them."""
    for table in CLUSTERED:
        create = re.compile(rf"(CREATE TABLE IF NOT EXISTS {table} \(.*?\n\));", re.DOTALL)
        script = create.sub(r"\1 WITHOUT ROWID;", script)
    return script


# The tables as the statements below expect them: the migrations (`_migrations`) make them.
SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reuse the id of a purged entry
    received_at REAL NOT NULL,
    type TEXT NOT NULL,
    device TEXT,
    key TEXT NOT NULL,
    dedupe BLOB UNIQUE,          -- digest of the slot while this entry holds it, else NULL
                                 -- (`ordered_digest`: event slots lead with their time)
    path TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,
    owner TEXT,
    lease_until REAL,
    finished_at REAL,
    last_error TEXT,
    duplicates INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at REAL
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS inbox_claimed ON inbox (owner) WHERE state = 'claimed';
CREATE INDEX IF NOT EXISTS inbox_open_device ON inbox (device, id)
    WHERE state IN ('pending', 'claimed');
CREATE INDEX IF NOT EXISTS inbox_device ON inbox (device, id);
CREATE INDEX IF NOT EXISTS inbox_dead ON inbox (id) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS inbox_type ON inbox (type, id);
CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    field TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL
);
-- Entries a sink has not published yet: rows only while an inbox is opened with sinks.
CREATE TABLE IF NOT EXISTS outbox (
    sink TEXT NOT NULL,
    id INTEGER NOT NULL,         -- the inbox entry
    owner TEXT,                  -- who leases it for publishing, until lease_until
    lease_until REAL,
    PRIMARY KEY (sink, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_entry ON outbox (id);
-- Purges that deleted entries the trackers used: what `trackers rebuild` cannot derive again.
CREATE TABLE IF NOT EXISTS purges (
    purged_at REAL NOT NULL,
    entries INTEGER NOT NULL,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    last_id INTEGER NOT NULL
);
-- The row /health/ready writes: a write that needs room on the disk, unlike an empty commit.
CREATE TABLE IF NOT EXISTS ready_checks (
    name TEXT PRIMARY KEY,
    checked_at REAL NOT NULL
);
-- When the store began to order its slot digests (migration 10): the newest entry received
-- before, whose event slots are held by their plain digests (no row: the store had no entry).
CREATE TABLE IF NOT EXISTS plain_digests (
    received_before REAL NOT NULL
);
"""


def ordered_digest(slot: str, order: float | None) -> bytes:
    """The ``dedupe`` column of the entry holding ``slot``: its digest (`slot_digest`), led for
    an event slot by the time its key names (``order``, `Incoming.order`), in 4 bytes of
    seconds, then 12 bytes of the digest.

    The dedupe index is a B-tree: plain digests are random, so on a big store each new slot
    lands on a leaf of its own and each commit writes as many index pages as it has entries.
    Event slots led by their time land on the index's few newest pages; a retry repeats its key,
    so it finds its slot under the same time. State slots (and events without a readable time)
    keep the plain digest: there are as many as things whose state they hold.
    """
    digest = slot_digest(slot)
    if order is None:
        return digest
    seconds = min(max(int(order), 0), 0xFFFFFFFF)
    return seconds.to_bytes(4, "big") + digest[:12]


# The entries whose event slots are held by plain digests were received up to this time.
PLAIN_BEFORE = "SELECT max(received_before) FROM plain_digests"

# No upsert: SQLite takes an AUTOINCREMENT id for an INSERT even when its ON CONFLICT clause
# turns it into an update (a duplicate) or into nothing (a state slot held by another key), so
# ids would skip a number at each. `SLOT` first finds the entry holding the slot.
INSERT = """
INSERT INTO inbox (received_at, type, device, key, dedupe, path, body, headers, due_at,
    state, owner, lease_until, attempts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id
"""

SLOT = "SELECT id, key, received_at FROM inbox WHERE dedupe = ?"

DUPLICATE = "UPDATE inbox SET duplicates = duplicates + 1, last_duplicate_at = ? WHERE id = ?"

OUTBOX_ADD = "INSERT INTO outbox (sink, id) VALUES (?, ?)"

# Free outbox entries: not leased, lease expired, or leased by the same owner (a retry).
OUTBOX_TAKE = """
UPDATE outbox SET owner = :owner, lease_until = :lease
WHERE sink = :sink AND id IN (
    SELECT id FROM outbox WHERE sink = :sink
        AND (owner IS NULL OR owner = :owner OR lease_until < :now)
    ORDER BY id LIMIT :limit)
RETURNING id
"""

# A new entry may go straight to the attached owner unless an earlier entry of its device is
# waiting in the inbox or held by another owner (the same rule as CLAIM). Read through the
# partial index of open entries, which holds only those: left to itself, the planner takes the
# index of every entry by device, and reads each of the device's entries ever kept.
BLOCKED = """
SELECT 1 FROM inbox INDEXED BY inbox_open_device
WHERE device = ? AND state IN ('pending', 'claimed') AND (state = 'pending' OR owner <> ?) LIMIT 1
"""

# Whether any entry is open that could hold a new entry back from `owner`: pending, or claimed by
# another owner. Three probes of partial indexes, once per transaction (see `SQLiteInbox.append`).
OPEN_ELSEWHERE = """
SELECT EXISTS (SELECT 1 FROM inbox WHERE state = 'pending')
    OR EXISTS (SELECT 1 FROM inbox WHERE state = 'claimed' AND owner < :owner)
    OR EXISTS (SELECT 1 FROM inbox WHERE state = 'claimed' AND owner > :owner)
"""

# Claims of other owners whose lease ended go back (never the claimer's own: its clock may have
# stepped past its own leases while it still holds them).
EXPIRE = """
UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL
WHERE state = 'claimed' AND lease_until < :now AND owner <> :owner
RETURNING owner
"""

# An entry is claimable unless an earlier entry of its device is held by another owner or is
# waiting for a retry: that keeps per-device order across owners and across retries.
CLAIM = f"""
UPDATE inbox SET state = 'claimed', owner = :owner, lease_until = :lease
WHERE id IN (
    SELECT e.id FROM inbox AS e
    WHERE e.state = 'pending' AND e.due_at <= :now AND NOT EXISTS (
        SELECT 1 FROM inbox AS x
        WHERE x.device = e.device AND x.id < e.id AND x.state IN ('pending', 'claimed')
          AND ((x.state = 'claimed' AND x.owner <> :owner)
               OR (x.state = 'pending' AND x.due_at > :now)))
    ORDER BY e.id LIMIT :limit)
RETURNING {COLUMNS}
"""  # noqa: S608 - a constant: only the column list is interpolated


def _one_of(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{column} IN ({','.join('?' * len(values))})", list(values)


def where(sel: Selection) -> tuple[str, list[Any]]:
    """A WHERE clause (``?`` placeholders only) and its parameters for a selection."""
    return _sqlbase.where(sel, mark="?", one_of=_one_of)
