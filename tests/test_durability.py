"""What a 200 promises, checked against real server processes and a real SQLite file.

The crash test kills the server mid-load and restarts it on the same file; the receiver
(`tests.ledger_receiver`) writes one ledger line per delivery, in a way a kill cannot undo.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from iotpush import Config, create_app
from iotpush.events import Refused
from tests._servers import JSON, free_port, ledger_lines, post_all, pushes, rows, serve_ledger
from tests.conftest import EXAMPLES, RECEIVE, Recorder, Tally, running, wait_until


@pytest.mark.slow
def test_server_killed_mid_load_keeps_and_delivers_every_acknowledged_push(
    tmp_path: Path,
) -> None:
    db, ledger, port = tmp_path / "inbox.db", tmp_path / "ledger", free_port()
    store = f"sqlite:///{db}"
    items = pushes(2400, devices=60)
    first_run, rest = items[:1600], items[1600:]

    with serve_ledger(tmp_path, port, store=store, ledger=ledger, name="first") as server:

        def kill_at_1000(acked: int) -> None:
            if acked == 1000:
                server.process.send_signal(signal.SIGKILL)

        acked, refused = asyncio.run(post_all(server.url, first_run, on_ack=kill_at_1000))
        assert server.process.wait(10) == -signal.SIGKILL
    assert len(acked) >= 1000
    assert refused, "every push was acknowledged: the kill did not land mid-run"

    with serve_ledger(tmp_path, port, store=store, ledger=ledger, name="second") as server:
        # The platform retries what got no answer; some of it was kept before the kill.
        acked_again, refused_again = asyncio.run(post_all(server.url, [*refused, *rest]))
        assert refused_again == []
        acked += acked_again
        expected = {p.key for p in acked}
        wait_until(
            lambda: expected <= set(ledger_lines(ledger, "done")),
            timeout=60,
            what="every acknowledged push in the ledger",
        )

    kept = rows(db, "SELECT key, body FROM inbox")
    keys = [key for key, _ in kept]
    assert len(keys) == len(set(keys)), "a retried push was kept twice"
    assert {p.body for p in acked} <= {bytes(body) for _, body in kept}
    assert expected <= set(ledger_lines(ledger, "done"))
    assert len(acked) == len(items)


def test_server_answers_503_while_the_inbox_is_locked_and_the_retry_is_delivered_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "inbox.db"
    recorder = Recorder()
    app = create_app(Config(receiver=recorder, store=f"sqlite:///{db}", busy_timeout=0.2))
    tally = Tally(app.events)
    body = EXAMPLES["04-deviceDataChanged"]
    with running(app) as url:
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as lock:
            lock.execute("BEGIN IMMEDIATE")  # another writer holds the file
            refused = httpx.post(url + RECEIVE, content=body, headers=JSON, timeout=10)
            lock.execute("ROLLBACK")
        assert rows(db, "SELECT count(*) FROM inbox") == [(0,)]
        retried = httpx.post(url + RECEIVE, content=body, headers=JSON, timeout=10)
        assert retried.status_code == 200
        recorder.wait_for(1)
        wait_until(
            lambda: rows(db, "SELECT state FROM inbox") == [("done",)],
            what="the entry to be done",
        )
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json() == {
        "error": "the inbox cannot persist the notification now; retry",
        "path": "$",
    }
    assert tally(Refused, reason="unavailable", status=503) == 1
    assert len(recorder.seen) == 1
    assert recorder.seen[0].raw == body


@pytest.mark.slow
def test_server_sigterm_finishes_slow_handlers_exits_0_and_restart_delivers_the_rest(
    tmp_path: Path,
) -> None:
    db, ledger, port = tmp_path / "inbox.db", tmp_path / "ledger", free_port()
    store = f"sqlite:///{db}"
    items = pushes(150, devices=12)
    expected = {p.key for p in items}

    first = serve_ledger(
        tmp_path, port, store=store, ledger=ledger, delay=0.5, name="first", log_level="info"
    )
    with first as server:
        acked, refused = asyncio.run(post_all(server.url, items))
        assert refused == []
        wait_until(
            lambda: len(ledger_lines(ledger, "begin")) > 0, timeout=20, what="a slow delivery"
        )
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(30)
        log = server.output()
    # uvicorn (>= 0.29) shuts down gracefully, then raises the signal again for the parent to see.
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete." in log
    assert "gave back" in log  # the dispatcher returned what it had not started

    begun, finished = ledger_lines(ledger, "begin"), ledger_lines(ledger, "done")
    assert set(begun) == set(finished), "a delivery under way was cut off"
    assert len(finished) < len(items), "everything was delivered before the stop"
    states = dict(rows(db, "SELECT state, count(*) FROM inbox GROUP BY state"))
    assert "claimed" not in states, "entries were left claimed by the stopped server"
    assert sum(states.values()) == len(items)

    with serve_ledger(tmp_path, port, store=store, ledger=ledger, name="second"):
        wait_until(
            lambda: (
                rows(db, "SELECT state, count(*) FROM inbox GROUP BY state")
                == [("done", len(items))]
            ),
            timeout=60,
            what="every entry to be done after the restart",
        )
    assert set(ledger_lines(ledger, "done")) == expected
    assert {p.key for p in acked} == expected
