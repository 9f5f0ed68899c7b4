"""Migration 8: a one-row table the readiness check writes, so that it proves the store takes
a write (an empty transaction commits on a full disk too).

Frozen: this text never changes once released. See `iotpush.inbox._migrations`.
"""

from __future__ import annotations

DESCRIPTION = "ready checks: the row /health/ready writes"

SQLITE = """
CREATE TABLE IF NOT EXISTS ready_checks (
    name TEXT PRIMARY KEY,
    checked_at REAL NOT NULL
);
"""

POSTGRES = """
CREATE TABLE IF NOT EXISTS ready_checks (
    name TEXT COLLATE "C" PRIMARY KEY,
    checked_at DOUBLE PRECISION NOT NULL
);
"""
