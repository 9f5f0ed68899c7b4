"""Migration 10: on SQLite, the dedupe index keeps event slots in the order of their time.

An event's slot digest (``inbox.dedupe``) is led by the time its key names
(`iotpush.inbox._sqlite_sql.ordered_digest`), so that new slots land on the last pages of the
index instead of one random leaf each. Entries kept before hold plain digests: the table
``plain_digests`` records the newest of them, and until the dedupe window has passed it the inbox
looks a slot up by both digests. Nothing is rewritten. PostgreSQL is unchanged.

Frozen: this text never changes once released. See `iotpush.inbox._migrations`.
"""

from __future__ import annotations

DESCRIPTION = "ordered dedupe: event slots by their time (SQLite)"

SQLITE = """
CREATE TABLE IF NOT EXISTS plain_digests (
    received_before REAL NOT NULL
);
INSERT INTO plain_digests (received_before)
SELECT newest FROM (SELECT max(received_at) AS newest FROM inbox) WHERE newest IS NOT NULL
"""

POSTGRES = "SELECT 1"
