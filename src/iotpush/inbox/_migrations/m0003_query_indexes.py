"""Migration 3: indexes for the query API's lists of notifications by type and by time.

Frozen: this text never changes once released (stores in the field were made by it). A schema
change is a new migration module; see `iotpush.inbox._migrations`. (Entries by device have
their index since migration 2; PostgreSQL had the one on ``received_at`` from the start.)

On a big SQLite store, building them takes a few seconds when the server first opens it.
"""

from __future__ import annotations

DESCRIPTION = "inbox indexes for the query API: entries by type and by time"

SQLITE = """
CREATE INDEX IF NOT EXISTS inbox_type ON inbox (type, id);
CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_at)
"""

POSTGRES = """
CREATE INDEX IF NOT EXISTS inbox_type ON inbox (type, id)
"""
