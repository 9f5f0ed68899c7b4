"""Migration 9: finished records found cheaply, and a count of those finished-retention deleted.

Indexes over the records in a final state (commands by terminal and update time, partial ones
of upgrades with a result, deleted devices, v5 messages and tasks by their final pushes), ordered
by when they were last heard of, so each purge round reads only those it deletes; the registry's
history by device, so a deleted device's rows go without a scan; and ``finished_purges``, one row
per kind of record: how many finished-retention deleted, for ``trackers rebuild`` to say.

Frozen: this text never changes once released (stores in the field were made by it). A schema
change is a new migration module; see `iotpush.inbox._migrations`.
"""

from __future__ import annotations

DESCRIPTION = "finished records indexed by when last heard of: what finished-retention deletes"

_INDEXES = """
CREATE INDEX IF NOT EXISTS commands_finished ON commands (terminal, updated_at);
CREATE INDEX IF NOT EXISTS upgrades_finished ON upgrades (updated_at)
    WHERE result IS NOT NULL;
CREATE INDEX IF NOT EXISTS devices_deleted ON devices (updated_at)
    WHERE deleted_entry_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS device_events_device ON device_events (device_id, entry_id);
CREATE INDEX IF NOT EXISTS message_events_final ON message_events (received_at)
    WHERE status IN ('DELIVERED', 'FAILED', 'TIMEOUT');
CREATE INDEX IF NOT EXISTS task_events_final ON task_events (received_at)
    WHERE upper(status) IN ('SUCCESS', 'PARTIALSUCCESS', 'FAIL', 'STOPPED')
"""

SQLITE = (
    _INDEXES
    + """;
CREATE TABLE IF NOT EXISTS finished_purges (
    kind TEXT PRIMARY KEY,
    records BIGINT NOT NULL,
    last_before DOUBLE PRECISION NOT NULL
)
"""
)

POSTGRES = (
    _INDEXES
    + """;
CREATE TABLE IF NOT EXISTS finished_purges (
    kind TEXT COLLATE "C" PRIMARY KEY,
    records BIGINT NOT NULL,
    last_before DOUBLE PRECISION NOT NULL
)
"""
)
