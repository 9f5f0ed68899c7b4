"""The SQL of the PostgreSQL inbox: schema steps, statements, and ``?`` placeholders translated.

Statements use psycopg's ``%s`` / ``%(name)s`` placeholders. The trackers' SQL (and any function
given to `Inbox.transact`) uses ``?``: `translate` turns it into ``%s``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from . import Selection, _sqlbase
from ._sqlbase import COLUMNS

__all__ = [
    "ACK",
    "BEGIN",
    "CANDIDATES",
    "CANDIDATES_LOCKED",
    "CHANNEL",
    "CLAIM_IDS",
    "CLEAR_SLOTS",
    "COLUMNS",
    "DB_NOW",
    "DEVICE_LOCKS",
    "INBOX_SCHEMA",
    "INSERT",
    "INSERT_MANY",
    "LOCK_DEVICES",
    "LOCK_ROWS",
    "NOTIFY",
    "OUTBOX_ADD",
    "OUTBOX_TAKE",
    "PURGE_LOCK",
    "PURGE_UNLOCK",
    "RELEASE_EXPIRED",
    "collated",
    "translate",
    "where",
]

# Text compares byte by byte, as in SQLite, whatever the database's default collation: paging
# by id (`after`) and ordering give the same answers on both backends.
_TEXT = re.compile(r"\bTEXT\b")

# One retention round at a time per store (schema): the others skip theirs. A session lock, on a
# connection the round opens for it (`PostgresInbox.purge_turn`); its key is not a device's.
PURGE_LOCK = (
    "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || '/ retention', 7284))"
)
# Given back before the connection closes: the server drops a closed session's locks only once
# its backend has exited, which may be after another process's next round has asked.
PURGE_UNLOCK = (
    "SELECT pg_advisory_unlock(hashtextextended(current_schema() || '/ retention', 7284))"
)

INBOX_SCHEMA = _TEXT.sub(
    'TEXT COLLATE "C"',
    """
CREATE TABLE IF NOT EXISTS inbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
    received_at DOUBLE PRECISION NOT NULL,
    type TEXT NOT NULL,
    device TEXT,
    key TEXT NOT NULL,
    dedupe BYTEA UNIQUE,          -- digest of the slot while this entry holds it, else NULL
    path TEXT NOT NULL,
    body BYTEA NOT NULL,
    headers TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at DOUBLE PRECISION NOT NULL,
    owner TEXT,
    lease_until DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    last_error TEXT,
    duplicates INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS inbox_claimed ON inbox (owner) WHERE state = 'claimed';
CREATE INDEX IF NOT EXISTS inbox_open_device ON inbox (device, id)
    WHERE state IN ('pending', 'claimed');
CREATE INDEX IF NOT EXISTS inbox_device ON inbox (device, id);
CREATE INDEX IF NOT EXISTS inbox_dead ON inbox (id) WHERE state = 'dead';
CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_at);
CREATE INDEX IF NOT EXISTS inbox_type ON inbox (type, id);
CREATE TABLE IF NOT EXISTS quarantine (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    field TEXT NOT NULL,
    body BYTEA NOT NULL,
    headers TEXT NOT NULL
);
-- Entries a sink has not published yet: rows only while an inbox is opened with sinks.
CREATE TABLE IF NOT EXISTS outbox (
    sink TEXT NOT NULL,
    id BIGINT NOT NULL,          -- the inbox entry
    owner TEXT,                  -- who leases it for publishing, until lease_until
    lease_until DOUBLE PRECISION,
    PRIMARY KEY (sink, id)
);
CREATE INDEX IF NOT EXISTS outbox_entry ON outbox (id);
-- Purges that deleted entries the trackers used: what `trackers rebuild` cannot derive again.
CREATE TABLE IF NOT EXISTS purges (
    purged_at DOUBLE PRECISION NOT NULL,
    entries BIGINT NOT NULL,
    first_received DOUBLE PRECISION NOT NULL,
    last_received DOUBLE PRECISION NOT NULL,
    last_id BIGINT NOT NULL
);
-- The row /health/ready writes: a write that needs room on the disk, unlike an empty commit.
CREATE TABLE IF NOT EXISTS ready_checks (
    name TEXT PRIMARY KEY,
    checked_at DOUBLE PRECISION NOT NULL
);
""",
)


def collated(script: str) -> str:
    """``script`` with every ``TEXT`` column compared byte by byte (``COLLATE "C"``), as the
    PostgreSQL migrations write the trackers' tables."""
    return _TEXT.sub('TEXT COLLATE "C"', script)


# Leases are compared on the database's clock: a host whose clock is ahead cannot take live
# claims of another, and its own leases are set from the same clock.
DB_NOW = "extract(epoch from now())"

# A new entry, or one more duplicate of the entry holding its slot (RETURNING its id, its
# duplicates, and the owner that holds it). With an ``owner`` (hot handoff, `Inbox.attach`),
# a new entry is claimed for it at once unless an earlier entry of its device waits in the
# inbox or is held by another owner (the rule of `CANDIDATES`); the writer holds the device's
# lock (`DEVICE_LOCKS`), so that rule sees every entry and claim of the device committed by
# any process.
INSERT = f"""
INSERT INTO inbox (received_at, type, device, key, dedupe, path, body, headers, due_at, state,
    owner, lease_until)
SELECT %(at)s, %(type)s, %(device)s, %(key)s, %(dedupe)s, %(path)s, %(body)s, %(headers)s,
    %(at)s, CASE WHEN hot.owner IS NULL THEN 'pending' ELSE 'claimed' END, hot.owner,
    CASE WHEN hot.owner IS NULL THEN NULL ELSE {DB_NOW} + %(lease)s::float8 END
FROM (SELECT CASE WHEN EXISTS (
        SELECT 1 FROM inbox WHERE device = %(device)s::text AND state IN ('pending', 'claimed')
            AND (state = 'pending' OR owner <> %(owner)s::text))
    THEN NULL ELSE %(owner)s::text END AS owner) AS hot
ON CONFLICT (dedupe) DO UPDATE
    SET duplicates = inbox.duplicates + 1, last_duplicate_at = excluded.received_at
    WHERE inbox.key = excluded.key AND inbox.received_at >= %(cutoff)s
RETURNING id, duplicates, owner, lease_until
"""  # noqa: S608 - a constant: only the clock expression is interpolated

# Statements that find entries by id test their state with ``IS TRUE``: a plain ``state = ...``
# (or ``owner = ...``) lets the planner pick a partial index instead of the primary key, and
# without statistics (a new table, or autovacuum off) it did: every claimed entry of the owner
# was read for each entry begun, every open entry for each ack.

# The attempts that a batch's deliveries begin (`PostgresInbox.begin`), in one statement; the ids
# it returns are those still claimed by the owner that began them.
BEGIN = """
UPDATE inbox SET attempts = (%(attempts)s::int[])[array_position(%(ids)s::bigint[], id)]
WHERE id = ANY(%(ids)s::bigint[])
    AND (state = 'claimed' AND owner = (%(owners)s::text[])[array_position(%(ids)s::bigint[], id)])
        IS TRUE
RETURNING id, owner
"""

ACK = """
UPDATE inbox SET state = 'done', finished_at = %s, owner = NULL, lease_until = NULL
WHERE id = ANY(%s::bigint[]) AND (state = 'claimed') IS TRUE
"""

# The appends of a batch in one INSERT, each row as `INSERT` takes it (arrays of its
# parameters, in append order; ``window``: the dedupe window). Identity values follow the
# SELECT's order, so ids follow the appends'. Its rows cannot see each other: the caller gives
# a row no ``owner`` after a row of its device that has none, and the slots of one statement are
# distinct (`CLEAR_SLOTS` has freed the stale ones), so every row is answered, by its digest.
# Arrays of bytes and numbers go in binary (``%b``): psycopg escapes a bytea array's text form
# element by element, which cost more than the statements saved.
INSERT_MANY = f"""
INSERT INTO inbox (received_at, type, device, key, dedupe, path, body, headers, due_at, state,
    owner, lease_until)
SELECT r.at, r.type, r.device, r.key, r.dedupe, r.path, r.body, r.headers, r.at,
    CASE WHEN hot.owner IS NULL THEN 'pending' ELSE 'claimed' END, hot.owner,
    CASE WHEN hot.owner IS NULL THEN NULL ELSE {DB_NOW} + r.lease END
FROM unnest(%(at)b::float8[], %(type)s::text[], %(device)s::text[], %(key)s::text[],
        %(dedupe)b::bytea[], %(path)s::text[], %(body)b::bytea[], %(headers)s::text[],
        %(owner)s::text[], %(lease)b::float8[])
    WITH ORDINALITY AS r(at, type, device, key, dedupe, path, body, headers, owner, lease, n)
CROSS JOIN LATERAL (SELECT CASE WHEN r.owner IS NULL OR EXISTS (
        SELECT 1 FROM inbox WHERE device = r.device AND state IN ('pending', 'claimed')
            AND (state = 'pending' OR owner <> r.owner))
    THEN NULL ELSE r.owner END AS owner) AS hot
ORDER BY r.n
ON CONFLICT (dedupe) DO UPDATE
    SET duplicates = inbox.duplicates + 1, last_duplicate_at = excluded.received_at
    WHERE inbox.key = excluded.key AND inbox.received_at >= excluded.received_at - %(window)s
RETURNING id, duplicates, owner, lease_until, dedupe
"""  # noqa: S608 - a constant: only the clock expression is interpolated

# Before `INSERT_MANY`: the slots its rows take that an entry of another key holds, or one
# received before the window (what `SQLInbox._inserted` does for one row after the fact).
CLEAR_SLOTS = """
UPDATE inbox SET dedupe = NULL
WHERE dedupe = ANY(%(dedupe)b::bytea[])
    AND (key <> (%(key)s::text[])[array_position(%(dedupe)b::bytea[], dedupe)]
        OR received_at < (%(at)b::float8[])[array_position(%(dedupe)b::bytea[], dedupe)]
            - %(window)s)
"""

OUTBOX_ADD = "INSERT INTO outbox (sink, id) SELECT sink, %s FROM unnest(%s::text[]) AS sink"

# Free outbox entries: not leased, lease expired, or leased by the same owner (a retry). Rows
# another process is taking are skipped: two processes never publish one entry at once.
OUTBOX_TAKE = """
UPDATE outbox SET owner = %(owner)s, lease_until = %(lease)s
WHERE sink = %(sink)s AND id IN (
    SELECT id FROM outbox WHERE sink = %(sink)s
        AND (owner IS NULL OR owner = %(owner)s OR lease_until < %(now)s)
    ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id
"""

# Claims of other owners that stopped renewing go back (never the claimer's own). Rows another
# transaction holds are left for the next claim rather than waited for: a claim never waits
# for a row lock.
RELEASE_EXPIRED = f"""
WITH expired AS (
    SELECT id, owner FROM inbox WHERE state = 'claimed' AND lease_until < {DB_NOW}
        AND owner <> %s FOR UPDATE SKIP LOCKED)
UPDATE inbox SET state = 'pending', owner = NULL, lease_until = NULL
FROM expired WHERE inbox.id = expired.id
RETURNING expired.owner
"""  # noqa: S608 - a constant: only the clock expression is interpolated

# The SQLite CLAIM's rule: an entry is claimable unless an earlier entry of its device is held
# by another owner or waits for a retry. ``devices`` (when given) narrows it to the devices this
# transaction holds the lock of, and entries without a device.
_RULE = """
SELECT e.id, e.device FROM inbox AS e
WHERE e.state = 'pending' AND e.due_at <= %(now)s {narrow} AND NOT EXISTS (
    SELECT 1 FROM inbox AS x
    WHERE x.device = e.device AND x.id < e.id AND x.state IN ('pending', 'claimed')
      AND ((x.state = 'claimed' AND x.owner <> %(owner)s)
           OR (x.state = 'pending' AND x.due_at > %(now)s)))
ORDER BY e.id LIMIT %(limit)s
"""
CANDIDATES = _RULE.format(narrow="")
CANDIDATES_LOCKED = _RULE.format(narrow="AND (e.device IS NULL OR e.device = ANY(%(devices)s))")

# One lock per device, held until the claim commits: two processes never look at one device's
# entries at the same time, and each sees what the other claimed. A device another claim holds
# is skipped, as SKIP LOCKED skips rows. Advisory locks belong to the whole database: the key
# names the schema too, so stores in other schemas never hold each other's devices back.
LOCK_DEVICES = """
SELECT d FROM unnest(%s::text[]) AS d
WHERE pg_try_advisory_xact_lock(hashtextextended(current_schema() || '/' || d, 7283))
"""

LOCK_ROWS = """
SELECT id FROM inbox WHERE id = ANY(%s) AND state = 'pending' AND due_at <= %s
FOR UPDATE SKIP LOCKED
"""

CLAIM_IDS = f"""
UPDATE inbox SET state = 'claimed', owner = %s, lease_until = {DB_NOW} + %s
WHERE id = ANY(%s) AND state = 'pending'
RETURNING {COLUMNS}
"""  # noqa: S608 - a constant: only the column list is interpolated

# The devices a write transaction appends to: it takes each one's lock (the key of
# `LOCK_DEVICES`, so a claim skips a device being written) before its first INSERT, and holds it
# until it commits. Transactions of any process about the same device take turns, so:
# a device's entries are committed in id order; hot handoff's rule sees every earlier entry
# and claim of the device; and the trackers' writes of a device (a tracker's state for a
# notification is its device's) never interleave. Transactions about other devices never wait
# for it. The locks are taken in the order of their keys, so two transactions never wait for
# each other's. Tracked entries without a device share the lock of the device ''.
DEVICE_LOCKS = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT hashtextextended(current_schema() || '/' || d, 7283) AS k
    FROM unnest(%s::text[]) AS d ORDER BY k) AS keys
"""

# Wakes the claimers of every process listening on the store (on commit): entries were left
# pending for `claim`, or given back.
# (A channel name is at most 63 bytes: the schema's is shortened to a digest.)
CHANNEL = "SELECT 'iotpush_' || left(md5(current_schema()), 16)"
NOTIFY = "SELECT pg_notify('iotpush_' || left(md5(current_schema()), 16), '')"


def _one_of(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{column} = ANY(%s)", [list(values)]


def where(sel: Selection) -> tuple[str, list[Any]]:
    """A WHERE clause (``%s`` placeholders only) and its parameters for a selection."""
    return _sqlbase.where(sel, mark="%s", one_of=_one_of)


# psycopg reads every ``%`` as a placeholder, even quoted; a ``?`` is one only outside quotes.
_QUOTED_OR_MARK = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``?`` placeholders (outside quoted strings and names) as ``%s``, and ``%`` as ``%%``."""

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        return text.replace("%", "%%")

    return _QUOTED_OR_MARK.sub(replace, sql)
