"""Migration 1: the inbox, the quarantine, the outbox and the four trackers' tables.

Frozen: this text never changes once released (stores in the field were made by it). A schema
change is a new migration module; see `iotpush.inbox._migrations`.
"""

from __future__ import annotations

DESCRIPTION = "inbox, quarantine and tracker tables"

SQLITE = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reuse the id of a purged entry
    received_at REAL NOT NULL,
    type TEXT NOT NULL,
    device TEXT,
    key TEXT NOT NULL,
    dedupe BLOB UNIQUE,          -- digest of the slot while this entry holds it, else NULL
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

CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    device_id TEXT,
    state TEXT,
    detail TEXT,
    terminal INTEGER NOT NULL,
    state_entry_id BIGINT,
    state_at DOUBLE PRECISION,
    deadline DOUBLE PRECISION,
    expected_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_device ON commands (device_id, command_id);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state, command_id);
CREATE INDEX IF NOT EXISTS commands_deadline ON commands (terminal, deadline);
CREATE TABLE IF NOT EXISTS command_events (
    command_id TEXT NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    device_id TEXT,
    code TEXT,
    state TEXT,
    detail TEXT,
    PRIMARY KEY (command_id, entry_id)
);
CREATE TABLE IF NOT EXISTS command_expectations (
    command_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    deadline DOUBLE PRECISION NOT NULL,
    expected_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS shadows (
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    status TEXT,
    properties TEXT,
    status_entry_id BIGINT,
    status_at DOUBLE PRECISION,
    delivered TEXT,
    delivered_entry_id BIGINT,
    delivered_at DOUBLE PRECISION,
    failed TEXT,
    failed_entry_id BIGINT,
    failed_at DOUBLE PRECISION,
    PRIMARY KEY (device_id, service_id)
);
CREATE INDEX IF NOT EXISTS shadows_status ON shadows (status);
CREATE TABLE IF NOT EXISTS shadow_events (
    entry_id BIGINT PRIMARY KEY,
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    status TEXT NOT NULL,
    properties TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_events_service ON shadow_events (device_id, service_id, entry_id);
CREATE TABLE IF NOT EXISTS shadow_expectations (
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    expected_at DOUBLE PRECISION NOT NULL,
    confirmed_entry_id BIGINT,
    PRIMARY KEY (device_id, service_id)
);

CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    info_entries TEXT NOT NULL,
    status TEXT,
    gateway_id TEXT,
    gateway_entry_id BIGINT,
    node_type TEXT,
    node_type_entry_id BIGINT,
    bind_result TEXT,
    bind_entry_id BIGINT,
    added_entry_id BIGINT,
    deleted_entry_id BIGINT,
    deleted_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_status ON devices (status, device_id);
CREATE TABLE IF NOT EXISTS device_events (
    entry_id BIGINT PRIMARY KEY,
    device_id TEXT NOT NULL,
    notify_type TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS device_data (
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    property TEXT NOT NULL,
    service_type TEXT,
    value TEXT NOT NULL,
    event_time TEXT NOT NULL,
    event_ts DOUBLE PRECISION NOT NULL,
    entry_id BIGINT NOT NULL,
    PRIMARY KEY (device_id, service_id, property)
);

CREATE TABLE IF NOT EXISTS upgrades (
    operation_id TEXT NOT NULL,
    sub_operation_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_id TEXT,
    state TEXT,
    raw_state TEXT,
    state_desc TEXT,
    state_entry_id BIGINT,
    state_at DOUBLE PRECISION,
    result TEXT,
    result_entry_id BIGINT,
    result_at DOUBLE PRECISION,
    detail TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (operation_id, sub_operation_id, device_id)
);
CREATE INDEX IF NOT EXISTS upgrades_device ON upgrades (device_id);
CREATE INDEX IF NOT EXISTS upgrades_updated ON upgrades (updated_at);
CREATE TABLE IF NOT EXISTS upgrade_events (
    entry_id BIGINT PRIMARY KEY,
    operation_id TEXT NOT NULL,
    sub_operation_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event TEXT NOT NULL,
    value TEXT NOT NULL,
    detail TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS upgrade_events_key
    ON upgrade_events (operation_id, sub_operation_id, device_id, entry_id);
"""

POSTGRES = """
CREATE TABLE IF NOT EXISTS inbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
    received_at DOUBLE PRECISION NOT NULL,
    type TEXT COLLATE "C" NOT NULL,
    device TEXT COLLATE "C",
    key TEXT COLLATE "C" NOT NULL,
    dedupe BYTEA UNIQUE,          -- digest of the slot while this entry holds it, else NULL
    path TEXT COLLATE "C" NOT NULL,
    body BYTEA NOT NULL,
    headers TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at DOUBLE PRECISION NOT NULL,
    owner TEXT COLLATE "C",
    lease_until DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    last_error TEXT COLLATE "C",
    duplicates INTEGER NOT NULL DEFAULT 0,
    last_duplicate_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS inbox_claimed ON inbox (owner) WHERE state = 'claimed';
CREATE INDEX IF NOT EXISTS inbox_open_device ON inbox (device, id)
    WHERE state IN ('pending', 'claimed');
CREATE INDEX IF NOT EXISTS inbox_received ON inbox (received_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT COLLATE "C" NOT NULL,
    field TEXT COLLATE "C" NOT NULL,
    body BYTEA NOT NULL,
    headers TEXT COLLATE "C" NOT NULL
);
-- Entries a sink has not published yet: rows only while an inbox is opened with sinks.
CREATE TABLE IF NOT EXISTS outbox (
    sink TEXT COLLATE "C" NOT NULL,
    id BIGINT NOT NULL,          -- the inbox entry
    owner TEXT COLLATE "C",                  -- who leases it for publishing, until lease_until
    lease_until DOUBLE PRECISION,
    PRIMARY KEY (sink, id)
);
CREATE INDEX IF NOT EXISTS outbox_entry ON outbox (id);

CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT COLLATE "C" PRIMARY KEY,
    device_id TEXT COLLATE "C",
    state TEXT COLLATE "C",
    detail TEXT COLLATE "C",
    terminal INTEGER NOT NULL,
    state_entry_id BIGINT,
    state_at DOUBLE PRECISION,
    deadline DOUBLE PRECISION,
    expected_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_device ON commands (device_id, command_id);
CREATE INDEX IF NOT EXISTS commands_state ON commands (state, command_id);
CREATE INDEX IF NOT EXISTS commands_deadline ON commands (terminal, deadline);
CREATE TABLE IF NOT EXISTS command_events (
    command_id TEXT COLLATE "C" NOT NULL,
    entry_id BIGINT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    device_id TEXT COLLATE "C",
    code TEXT COLLATE "C",
    state TEXT COLLATE "C",
    detail TEXT COLLATE "C",
    PRIMARY KEY (command_id, entry_id)
);
CREATE TABLE IF NOT EXISTS command_expectations (
    command_id TEXT COLLATE "C" PRIMARY KEY,
    device_id TEXT COLLATE "C" NOT NULL,
    deadline DOUBLE PRECISION NOT NULL,
    expected_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE IF NOT EXISTS shadows (
    device_id TEXT COLLATE "C" NOT NULL,
    service_id TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C",
    properties TEXT COLLATE "C",
    status_entry_id BIGINT,
    status_at DOUBLE PRECISION,
    delivered TEXT COLLATE "C",
    delivered_entry_id BIGINT,
    delivered_at DOUBLE PRECISION,
    failed TEXT COLLATE "C",
    failed_entry_id BIGINT,
    failed_at DOUBLE PRECISION,
    PRIMARY KEY (device_id, service_id)
);
CREATE INDEX IF NOT EXISTS shadows_status ON shadows (status);
CREATE TABLE IF NOT EXISTS shadow_events (
    entry_id BIGINT PRIMARY KEY,
    device_id TEXT COLLATE "C" NOT NULL,
    service_id TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    properties TEXT COLLATE "C" NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_events_service ON shadow_events (device_id, service_id, entry_id);
CREATE TABLE IF NOT EXISTS shadow_expectations (
    device_id TEXT COLLATE "C" NOT NULL,
    service_id TEXT COLLATE "C" NOT NULL,
    properties TEXT COLLATE "C" NOT NULL,
    expected_at DOUBLE PRECISION NOT NULL,
    confirmed_entry_id BIGINT,
    PRIMARY KEY (device_id, service_id)
);

CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT COLLATE "C" PRIMARY KEY,
    info TEXT COLLATE "C" NOT NULL,
    info_entries TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C",
    gateway_id TEXT COLLATE "C",
    gateway_entry_id BIGINT,
    node_type TEXT COLLATE "C",
    node_type_entry_id BIGINT,
    bind_result TEXT COLLATE "C",
    bind_entry_id BIGINT,
    added_entry_id BIGINT,
    deleted_entry_id BIGINT,
    deleted_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_status ON devices (status, device_id);
CREATE TABLE IF NOT EXISTS device_events (
    entry_id BIGINT PRIMARY KEY,
    device_id TEXT COLLATE "C" NOT NULL,
    notify_type TEXT COLLATE "C" NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS device_data (
    device_id TEXT COLLATE "C" NOT NULL,
    service_id TEXT COLLATE "C" NOT NULL,
    property TEXT COLLATE "C" NOT NULL,
    service_type TEXT COLLATE "C",
    value TEXT COLLATE "C" NOT NULL,
    event_time TEXT COLLATE "C" NOT NULL,
    event_ts DOUBLE PRECISION NOT NULL,
    entry_id BIGINT NOT NULL,
    PRIMARY KEY (device_id, service_id, property)
);

CREATE TABLE IF NOT EXISTS upgrades (
    operation_id TEXT COLLATE "C" NOT NULL,
    sub_operation_id TEXT COLLATE "C" NOT NULL,
    device_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    app_id TEXT COLLATE "C",
    state TEXT COLLATE "C",
    raw_state TEXT COLLATE "C",
    state_desc TEXT COLLATE "C",
    state_entry_id BIGINT,
    state_at DOUBLE PRECISION,
    result TEXT COLLATE "C",
    result_entry_id BIGINT,
    result_at DOUBLE PRECISION,
    detail TEXT COLLATE "C" NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (operation_id, sub_operation_id, device_id)
);
CREATE INDEX IF NOT EXISTS upgrades_device ON upgrades (device_id);
CREATE INDEX IF NOT EXISTS upgrades_updated ON upgrades (updated_at);
CREATE TABLE IF NOT EXISTS upgrade_events (
    entry_id BIGINT PRIMARY KEY,
    operation_id TEXT COLLATE "C" NOT NULL,
    sub_operation_id TEXT COLLATE "C" NOT NULL,
    device_id TEXT COLLATE "C" NOT NULL,
    kind TEXT COLLATE "C" NOT NULL,
    event TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    detail TEXT COLLATE "C" NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS upgrade_events_key
    ON upgrade_events (operation_id, sub_operation_id, device_id, entry_id);
"""
