"""Migration 2: indexes the console's lists and counts need on a large inbox.

Frozen: this text never changes once released. A device's entries (the notifications list
filtered by device, keyset on id) and the dead letters (their count on the overview, the list
filtered by state, the bulk replay's count) each read an index rather than the whole inbox.
"""

from __future__ import annotations

DESCRIPTION = "inbox indexes for the console: entries by device, dead letters"

SQLITE = """
CREATE INDEX IF NOT EXISTS inbox_device ON inbox (device, id);
CREATE INDEX IF NOT EXISTS inbox_dead ON inbox (id) WHERE state = 'dead';
"""

POSTGRES = """
CREATE INDEX IF NOT EXISTS inbox_device ON inbox (device, id);
CREATE INDEX IF NOT EXISTS inbox_dead ON inbox (id) WHERE state = 'dead';
"""
