"""Migration 7: the trackers' histories indexed by entry id, so retention purges them in order.

Frozen: this text never changes once released (stores in the field were made by it). A schema
change is a new migration module; see `iotpush.inbox._migrations`. (The shadow, device and
upgrade histories are keyed by entry id already.)

On a big SQLite store, building them takes a few seconds when the server first opens it.
"""

from __future__ import annotations

DESCRIPTION = "tracker histories indexed by entry id: what retention purges"

SQLITE = """
CREATE INDEX IF NOT EXISTS command_events_entry ON command_events (entry_id);
CREATE INDEX IF NOT EXISTS message_events_entry ON message_events (entry_id);
CREATE INDEX IF NOT EXISTS task_events_entry ON task_events (entry_id)
"""

POSTGRES = SQLITE
