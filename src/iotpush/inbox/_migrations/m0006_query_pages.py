"""Migration 6: the query API's pages read few pages of the store.

Partial indexes for the unsynced shadow list, read in key order a page at a time (FAILED
services, unconfirmed expectations); they replace the index of shadows by status, which led the
list to read every FAILED service and sort them. On SQLite, ``device_data`` becomes a ``WITHOUT
ROWID`` table clustered by its key, so a device's latest values (and a page of devices') lie
together on a few b-tree pages instead of one page per value; its separate key index goes away.

Frozen: this text never changes once released (stores in the field were made by it). A schema
change is a new migration module; see `iotpush.inbox._migrations`.

On a big SQLite store, copying ``device_data`` takes a few seconds per million values when the
server first opens it.
"""

from __future__ import annotations

DESCRIPTION = "query pages: unsynced shadow indexes, device data clustered by device (SQLite)"

_INDEXES = """
DROP INDEX IF EXISTS shadows_status;
CREATE INDEX IF NOT EXISTS shadows_failed ON shadows (device_id, service_id)
    WHERE status = 'FAILED';
CREATE INDEX IF NOT EXISTS shadow_expectations_pending ON shadow_expectations
    (device_id, service_id) WHERE confirmed_entry_id IS NULL
"""

SQLITE = (
    _INDEXES
    + """;
CREATE TABLE device_data_clustered (
    device_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    property TEXT NOT NULL,
    service_type TEXT,
    value TEXT NOT NULL,
    event_time TEXT NOT NULL,
    event_ts DOUBLE PRECISION NOT NULL,
    entry_id BIGINT NOT NULL,
    PRIMARY KEY (device_id, service_id, property)
) WITHOUT ROWID;
INSERT INTO device_data_clustered (device_id, service_id, property, service_type, value,
    event_time, event_ts, entry_id)
SELECT device_id, service_id, property, service_type, value, event_time, event_ts, entry_id
FROM device_data ORDER BY device_id, service_id, property;
DROP TABLE device_data;
ALTER TABLE device_data_clustered RENAME TO device_data
"""
)

POSTGRES = _INDEXES
