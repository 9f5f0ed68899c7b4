"""The PostgreSQL inbox's delivery statements find entries by their primary key, whatever the
planner knows: their plans, not their timing.

A table no ``ANALYZE`` has seen (a new store, or autovacuum off) gives the planner no statistics,
and it took the partial index of claims (every claimed entry of the owner) to begin one
attempt, and the partial index of open entries (all of them) to acknowledge a few. The plans are
pinned here on such a table, with thousands of entries claimed by one owner.
"""

from __future__ import annotations

from typing import Any

import pytest

from iotpush.inbox._postgres_db import parse_url
from iotpush.inbox._postgres_sql import ACK, BEGIN

IDS = [2000, 2002, 2010]
PLANS: dict[str, tuple[str, Any]] = {
    "begin": (BEGIN, {"ids": IDS, "attempts": [1, 1, 1], "owners": ["me"] * 3}),
    "ack": (ACK, (1.0, IDS)),
}
_FILL = """
INSERT INTO inbox (received_at, type, device, key, dedupe, path, body, headers, due_at, state,
    owner, lease_until)
SELECT g, 't', 'dev-' || mod(g, 300), 'k' || g, decode(md5(g::text), 'hex'), '/p', 'x', '{}', g,
    CASE WHEN g < 1000 THEN 'done' WHEN mod(g, 2) = 0 THEN 'claimed' ELSE 'pending' END,
    CASE WHEN g < 1000 THEN NULL ELSE 'me' END, CASE WHEN g < 1000 THEN NULL ELSE 1e12 END
FROM generate_series(1, 5000) AS g
"""


@pytest.mark.parametrize("name", list(PLANS))
def test_delivery_statement_reads_the_primary_key_without_statistics(
    postgres_store: str, name: str
) -> None:
    sql, params = PLANS[name]
    with parse_url(postgres_store).connect() as conn:
        conn.execute(_FILL)
        with conn.transaction():
            rows = conn.execute(f"EXPLAIN (COSTS OFF) {sql}", params).fetchall()  # type: ignore[arg-type]
    plan = "\n".join(row[0] for row in rows)
    assert "inbox_pkey" in plan, plan
    assert "inbox_claimed" not in plan, plan
    assert "inbox_open_device" not in plan, plan
