"""Migration 4: the v5 message tracker's and batch task tracker's tables.

Frozen: this text never changes once released. See `iotpush.inbox._migrations`.
"""

from __future__ import annotations

DESCRIPTION = "v5 message and batch task trackers"

SQLITE = """
CREATE TABLE IF NOT EXISTS message_events (
    message_id TEXT NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    device_id TEXT,
    name TEXT,
    topic TEXT,
    status TEXT NOT NULL,
    status_time TEXT,
    error TEXT,
    PRIMARY KEY (message_id, entry_id)
);
CREATE TABLE IF NOT EXISTS task_events (
    task_id TEXT NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    app_id TEXT,
    task_type TEXT,
    status TEXT NOT NULL,
    status_desc TEXT,
    PRIMARY KEY (task_id, entry_id)
);
"""

POSTGRES = """
CREATE TABLE IF NOT EXISTS message_events (
    message_id TEXT COLLATE "C" NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    device_id TEXT COLLATE "C",
    name TEXT COLLATE "C",
    topic TEXT COLLATE "C",
    status TEXT COLLATE "C" NOT NULL,
    status_time TEXT COLLATE "C",
    error TEXT COLLATE "C",
    PRIMARY KEY (message_id, entry_id)
);
CREATE TABLE IF NOT EXISTS task_events (
    task_id TEXT COLLATE "C" NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    app_id TEXT COLLATE "C",
    task_type TEXT COLLATE "C",
    status TEXT COLLATE "C" NOT NULL,
    status_desc TEXT COLLATE "C",
    PRIMARY KEY (task_id, entry_id)
);
"""
