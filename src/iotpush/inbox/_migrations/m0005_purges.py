"""Migration 5: a record of the purges that deleted entries the trackers had used.

Frozen: this text never changes once released (stores in the field were made by it). A schema
change is a new migration module; see `iotpush.inbox._migrations`.
"""

from __future__ import annotations

DESCRIPTION = "purge records: what a tracker rebuild can no longer derive"

SQLITE = """
CREATE TABLE IF NOT EXISTS purges (
    purged_at REAL NOT NULL,
    entries INTEGER NOT NULL,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    last_id INTEGER NOT NULL
);
"""

POSTGRES = """
CREATE TABLE IF NOT EXISTS purges (
    purged_at DOUBLE PRECISION NOT NULL,
    entries BIGINT NOT NULL,
    first_received DOUBLE PRECISION NOT NULL,
    last_received DOUBLE PRECISION NOT NULL,
    last_id BIGINT NOT NULL
);
"""
