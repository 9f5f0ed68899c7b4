"""What only the PostgreSQL inbox does: migrations, several processes on one database, outages.

The contract every backend keeps is ``tests/test_inbox_contract_*.py`` (PostgreSQL too). Here:
``iotpush db upgrade`` and ``status``, a server refusing an unmigrated schema, two inboxes on one
database (two processes) claiming at once, a dead process's claims, dedupe across processes, and
the 503 when the database cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from iotpush import Config, Notification, create_app, decode, testing, trackers
from iotpush.cli import main
from iotpush.events import Refused
from iotpush.exceptions import ConfigError, InboxError, InboxUnavailable
from iotpush.inbox import Entry, Incoming, Selection, _migrations, open_inbox
from iotpush.inbox._postgres_sql import DB_NOW
from iotpush.inbox.postgres import PostgresInbox
from iotpush.models import DeviceInfoChanged
from tests._inbox import (
    FakeClock,
    attached_owner_claims,
    handoff_waits_in_one_transaction,
    incoming,
)
from tests.conftest import EXAMPLES, RECEIVE, Recorder, Tally, run, running, wait_until

ROOT = Path(__file__).resolve().parents[1]
JSON = {"content-type": "application/json"}


def closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# migrations ----------------------------------------------------------------------------------


def test_db_upgrade_twice_applies_once_and_records_the_version(postgres_url: str) -> None:
    runner = CliRunner()
    before = runner.invoke(main, ["db", "status", "--store", postgres_url])
    first = runner.invoke(main, ["db", "upgrade", "--store", postgres_url])
    second = runner.invoke(main, ["db", "upgrade", "--store", postgres_url])
    after = runner.invoke(main, ["db", "status", "--store", postgres_url])

    latest = _migrations.LATEST
    assert before.exit_code == 1
    assert f"schema version 0 of {latest} (postgres)" in before.output
    assert "pending 1: inbox, quarantine and tracker tables" in before.output
    assert first.exit_code == 0, first.output
    for step in _migrations.MIGRATIONS:
        assert f"applied {step.version}: {step.description}" in first.output
    assert second.exit_code == 0, second.output
    assert "applied" not in second.output
    assert f"is at schema version {latest}" in second.output
    assert after.exit_code == 0
    assert after.output.strip() == f"schema version {latest} of {latest} (postgres)"
    assert _migrations.status(postgres_url).up_to_date


def test_db_upgrade_url_with_a_new_schema_creates_it(postgres_url: str) -> None:
    url = postgres_url.rsplit("schema=", 1)[0] + "schema=" + postgres_url.rsplit("=", 1)[1] + "_b"
    try:
        applied = _migrations.upgrade(url)
        assert applied == list(_migrations.MIGRATIONS)
        assert _migrations.status(url).current == _migrations.LATEST
    finally:
        import psycopg

        with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {url.rsplit('=', 1)[1]} CASCADE")


def test_open_unmigrated_schema_refuses_naming_db_upgrade(postgres_url: str) -> None:
    async def scenario() -> None:
        async with PostgresInbox(postgres_url):
            pass

    with pytest.raises(ConfigError, match=r"has no iotpush schema: run `iotpush db upgrade"):
        run(scenario())


def test_serve_unmigrated_schema_exits_with_one_line_naming_db_upgrade(postgres_url: str) -> None:
    command = [sys.executable, "-m", "iotpush.cli", "serve", "--store", postgres_url,
               "--port", str(closed_port())]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "has no iotpush schema: run `iotpush db upgrade --store postgresql://" in lines[0]
    assert _migrations.status(postgres_url).current == 0, "serve created the schema"


def test_import_iotpush_does_not_import_the_driver() -> None:
    code = "import sys, iotpush, iotpush.cli, iotpush.server; print('psycopg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_open_inbox_without_the_driver_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from iotpush import open_inbox\n"
        "from iotpush.exceptions import ConfigError\n"
        "try:\n"
        "    open_inbox('postgresql://127.0.0.1/test')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == (
        "PostgreSQL support needs the postgres extra: pip install 'iotpush[postgres]'"
    )


def test_store_url_schema_must_be_a_plain_name() -> None:
    with pytest.raises(ConfigError, match="schema must be a plain SQL name"):
        open_inbox("postgresql://127.0.0.1/test?schema=x;drop")


def test_tracker_connection_translates_question_marks_outside_quotes(postgres_store: str) -> None:
    from iotpush.inbox._postgres_db import Db, parse_url

    with parse_url(postgres_store).connect() as conn:
        row = Db(conn).execute("SELECT '?%', ?, 'it''s ?', ?", (1, "two")).fetchone()
        bare = Db(conn).execute("SELECT '100%'").fetchone()
    assert row == ("?%", 1, "it's ?", "two")
    assert bare == ("100%",)


def test_concurrent_appends_share_transactions(postgres_store: str) -> None:
    clock = FakeClock()

    async def scenario() -> tuple[int, int, int]:
        async with PostgresInbox(postgres_store, clock=clock) as inbox:
            await asyncio.gather(*(inbox.append(incoming(clock, f"k{i}")) for i in range(200)))
            return inbox.commits, inbox.writes, (await inbox.stats()).total

    commits, writes, total = run(scenario())
    assert (writes, total) == (200, 200)
    assert commits < 20, "each append paid for a transaction of its own"


# several processes on one database -----------------------------------------------------------


def test_two_inboxes_claiming_at_once_keep_device_order_and_never_share_an_entry(
    postgres_store: str,
) -> None:
    devices = [f"dev-{i}" for i in range(6)]
    clock = FakeClock()
    started: dict[int, str] = {}  # entry id -> the owner that began delivering it
    acked: set[int] = set()
    problems: list[str] = []

    async def deliver(inbox: PostgresInbox, owner: str, entries: list[Entry]) -> None:
        lanes: dict[str | None, list[Entry]] = defaultdict(list)
        for entry in entries:
            lanes[entry.device].append(entry)
        for lane in lanes.values():
            for entry in lane:
                earlier = [i for i in ids_by_device[entry.device] if i < entry.id]
                if entry.device is not None and not set(earlier) <= acked:
                    problems.append(f"{owner} began {entry.id} before {set(earlier) - acked}")
                if entry.id in started:
                    problems.append(f"{entry.id} handed to {started[entry.id]} and {owner}")
                started[entry.id] = owner
                await asyncio.sleep(random.random() / 500)  # the handler runs
                acked.add(entry.id)  # it returned: the next entry of its device may begin
                await inbox.ack([entry.id])

    async def worker(inbox: PostgresInbox, owner: str, total: int) -> None:
        while len(acked) < total:
            entries = await inbox.claim(owner, random.randint(1, 12), 30.0)
            if not entries:
                await asyncio.sleep(0.002)
                continue
            await deliver(inbox, owner, entries)

    ids_by_device: dict[str | None, list[int]] = defaultdict(list)

    async def scenario() -> None:
        async with (
            PostgresInbox(postgres_store, clock=clock) as a,
            PostgresInbox(postgres_store, clock=clock) as b,
        ):
            for n in range(240):
                device = random.choice([*devices, None])
                accepted = await (a if n % 2 else b).append(incoming(clock, f"k{n}", device=device))
                ids_by_device[device].append(accepted.id)
            await asyncio.wait_for(
                asyncio.gather(worker(a, "owner-a", 240), worker(b, "owner-b", 240)), 60
            )

    run(scenario())
    assert problems == []
    assert sorted(started) == sorted(i for ids in ids_by_device.values() for i in ids)
    assert set(started.values()) == {"owner-a", "owner-b"}, "one inbox did all the work"


def test_claims_of_a_dead_process_return_when_their_lease_ends(
    postgres_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()

    async def scenario() -> tuple[list[int], list[int], list[int], list[Entry]]:
        async with PostgresInbox(postgres_store, clock=clock) as survivor:
            crashed = PostgresInbox(postgres_store, clock=clock)
            await crashed.open()
            ids = [(await crashed.append(incoming(clock, f"k{i}"))).id for i in range(3)]
            held = [e.id for e in await crashed.claim("crashed", 2, 30.0)]
            assert await crashed.begin("crashed", held[0], 1)
            await crashed.close()  # as if killed: nothing given back
            during = [e.id for e in await survivor.claim("survivor", 10, 30.0)]
            # 31 s pass on the database's clock, which leases use.
            sql = "UPDATE inbox SET lease_until = lease_until - 31 WHERE lease_until IS NOT NULL"
            await survivor.transact(lambda db: db.execute(sql))
            after = await survivor.claim("survivor", 10, 30.0)
            return ids, held, during, after

    ids, held, during, after = run(scenario())
    assert held == ids[:2]
    assert during == [], "the later entry overtook the dead process's claims"
    assert [e.id for e in after] == ids
    assert [e.attempts for e in after] == [1, 0, 0]  # only the one a handler began is charged
    assert {e.owner for e in after} == {"survivor"}
    takeovers = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert takeovers == ["took over 2 entries claimed by crashed: its lease ended without renewal"]


def test_same_push_to_two_processes_at_once_is_kept_once(postgres_store: str) -> None:
    clock = FakeClock()

    async def scenario() -> list[tuple[int, bool]]:
        async with (
            PostgresInbox(postgres_store, clock=clock) as a,
            PostgresInbox(postgres_store, clock=clock) as b,
        ):
            pushes = [a.append(incoming(clock, f"k{i % 10}")) for i in range(20)]
            pushes += [b.append(incoming(clock, f"k{i % 10}")) for i in range(20)]
            accepted = await asyncio.gather(*pushes)
            stats = await a.stats()
            assert stats.total == 10
            assert stats.duplicates == 30
            return [(x.id, x.duplicate) for x in accepted]

    accepted = run(scenario())
    kept = {id for id, duplicate in accepted if not duplicate}
    assert len(kept) == 10
    assert {id for id, _ in accepted} == kept


def test_two_inboxes_tracking_the_same_devices_at_once_lose_no_update_and_never_deadlock(
    postgres_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Two processes apply the status pushes of the same commands, and the registry pushes of
    # the same devices, in concurrent transactions. A tracker reads its record and writes it
    # back: without the device locks, a transaction that read before the other committed
    # writes back a record missing the other's push.
    caplog.set_level(logging.INFO, logger="iotpush.inbox")
    devices = [f"dev-{i}" for i in range(4)]
    rounds = 20

    def command_push(command: str, device: str, code: str) -> Notification:
        result = {"result_code": code}
        return testing.build(
            "nbCommandStatusChanged", command_id=command, device_id=device, result=result
        )

    def info_push(device: str, version: int) -> Notification:
        return testing.build(
            "deviceInfoChanged",
            device_id=device,
            device_info={"sw_version": f"v{version}", "name": f"n{version}"},
        )

    def pushed(n: Notification, at: float) -> Incoming:
        body = testing.encode(n)
        kind = "command" if n.notify_type == "nbCommandStatusChanged" else "notify"
        decoded = decode(body, kind)
        return Incoming.from_notification(
            decoded, body=body, path=testing.path_for(n), headers={}, received_at=at
        )

    async def scenario() -> tuple[dict[str, Any], dict[str, tuple[Any, str]]]:
        options: dict[str, Any] = {"projections": trackers.PROJECTIONS}
        async with (
            PostgresInbox(postgres_store, **options) as a,
            PostgresInbox(postgres_store, **options) as b,
        ):
            latest: dict[str, tuple[int, str]] = {}  # device -> (entry id, sw_version sent)
            for r in range(rounds):
                pushes: list[tuple[str, Notification]] = []
                for i, device in enumerate(devices * 2):
                    command = f"cmd-{r}-{i}"
                    for code in ("SENT", "DELIVERED", "SUCCESSFUL"):
                        pushes.append((device, command_push(command, device, code)))
                    pushes.append((device, info_push(device, r * 100 + i)))
                random.shuffle(pushes)
                appends = [
                    (a if k % 2 else b).append(pushed(n, 1000.0 + r))
                    for k, (_, n) in enumerate(pushes)
                ]
                results = await asyncio.gather(*appends)
                for (device, n), accepted in zip(pushes, results, strict=True):
                    if n.notify_type == "deviceInfoChanged":
                        assert isinstance(n, DeviceInfoChanged)
                        version = n.device_info.sw_version or ""
                        if accepted.id > latest.get(device, (0, ""))[0]:
                            latest[device] = (accepted.id, version)

            def read(db: Any) -> tuple[dict[str, Any], dict[str, tuple[Any, str]]]:
                states = {c.command_id: c.state for c in trackers.find_commands(db, limit=1000)}
                infos = {
                    d: (device.info.get("swVersion") if device else None, latest[d][1])
                    for d in devices
                    for device in [trackers.get_device(db, d)]
                }
                return states, infos

            return await a.read(read)

    states, infos = run(scenario())
    assert len(states) == rounds * len(devices) * 2
    assert {c: s for c, s in states.items() if s != "SUCCESSFUL"} == {}
    assert {d: (got, sent) for d, (got, sent) in infos.items() if got != sent} == {}
    assert not [r for r in caplog.records if "deadlock" in r.getMessage()]


def test_two_inboxes_taking_the_outbox_at_once_never_take_one_entry_twice(
    postgres_store: str,
) -> None:
    clock = FakeClock()

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        async with (
            PostgresInbox(postgres_store, clock=clock, outbox=["nats:s"]) as a,
            PostgresInbox(postgres_store, clock=clock, outbox=["nats:s"]) as b,
        ):
            ids = [(await a.append(incoming(clock, f"k{i}"))).id for i in range(60)]
            taken_a: list[int] = []
            taken_b: list[int] = []

            async def take(inbox: PostgresInbox, owner: str, into: list[int]) -> None:
                for _ in range(30):
                    taken = [e.id for e in await inbox.unpublished("nats:s", owner, 3, 30.0)]
                    into += taken
                    await inbox.published("nats:s", taken)

            await asyncio.gather(take(a, "a", taken_a), take(b, "b", taken_b))
            return ids, taken_a, taken_b

    ids, taken_a, taken_b = run(scenario())
    assert not set(taken_a) & set(taken_b)
    assert sorted({*taken_a, *taken_b}) == ids


def test_cli_operator_commands_work_on_a_postgres_store(postgres_store: str) -> None:
    clock = FakeClock()

    async def fill() -> None:
        async with PostgresInbox(postgres_store, clock=clock) as inbox:
            for i in range(3):
                await inbox.append(incoming(clock, f"k{i}", type="deviceAdded"))

    run(fill())
    runner = CliRunner()
    stats = runner.invoke(main, ["inbox", "stats", "--store", postgres_store])
    listed = runner.invoke(main, ["inbox", "ls", "--store", postgres_store])
    assert stats.exit_code == 0, stats.output
    assert "pending" in stats.output and "3" in stats.output
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("deviceAdded") == 3


# outages -------------------------------------------------------------------------------------


def test_open_unreachable_database_raises_unavailable() -> None:
    async def scenario() -> None:
        async with PostgresInbox(f"postgresql://127.0.0.1:{closed_port()}/test", busy_timeout=1):
            pass

    with pytest.raises(InboxUnavailable, match=r"cannot connect to postgresql://127\.0\.0\.1"):
        run(scenario())


def test_server_answers_503_when_its_connection_is_lost_then_reconnects(
    postgres_store: str,
) -> None:
    import psycopg

    recorder = Recorder()
    app = create_app(Config(receiver=recorder, store=postgres_store))
    tally = Tally(app.events)
    body = EXAMPLES["04-deviceDataChanged"]
    with running(app) as url:
        first = httpx.post(url + RECEIVE, content=body, headers=JSON, timeout=10)
        recorder.wait_for(1)
        server = postgres_store.split("?")[0]
        schema = postgres_store.rsplit("schema=", 1)[1]
        with psycopg.connect(server, autocommit=True) as admin:
            states = f"SELECT state FROM {schema}.inbox"  # its ack written: the writer is idle
            wait_until(lambda: admin.execute(states).fetchall() == [("done",)], what="the ack")
            # The database drops the writer's session (a restart, a failover, an admin).
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (f"iotpush writer {schema}",),
            ).fetchall()
        retried = EXAMPLES["01-deviceAdded"]
        lost = httpx.post(url + RECEIVE, content=retried, headers=JSON, timeout=10)
        again = httpx.post(url + RECEIVE, content=retried, headers=JSON, timeout=10)
        recorder.wait_for(2)
    assert first.status_code == 200
    assert killed, "no writer session found to end"
    assert lost.status_code == 503
    assert lost.headers["retry-after"] == "5"
    assert again.status_code == 200
    assert tally(Refused, reason="unavailable", status=503) == 1
    assert [n.raw for n in recorder.seen] == [body, retried]


def test_env_required_services_make_an_unreachable_server_fail(tmp_path: Path) -> None:
    test = tmp_path / "test_needs_postgres.py"
    test.write_text(
        "from tests.conftest import postgres_server\ndef test_it():\n    postgres_server()\n"
    )
    env = {**os.environ, "IOTPUSH_TEST_POSTGRES": f"postgresql://127.0.0.1:{closed_port()}/x",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    outcomes = {}
    for required in ("0", "1"):
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test),
             "--rootdir", str(tmp_path), "-c", os.devnull],
            env={**env, "IOTPUSH_REQUIRE_SERVICES": required}, capture_output=True, text=True,
            cwd=ROOT, timeout=60,
        )  # fmt: skip
        outcomes[required] = done.stdout
    assert "1 skipped" in outcomes["0"]
    assert "1 failed" in outcomes["1"]
    assert "start it or set IOTPUSH_TEST_POSTGRES=" in outcomes["1"]


def test_claims_are_not_taken_by_a_process_whose_clock_is_ahead(postgres_store: str) -> None:
    clock, ahead = FakeClock(), FakeClock()
    ahead.advance(3600)  # an hour ahead: every lease looks ended to its clock

    async def scenario() -> list[Entry]:
        async with (
            PostgresInbox(postgres_store, clock=clock) as live,
            PostgresInbox(postgres_store, clock=ahead) as hasty,
        ):
            ids = [(await live.append(incoming(clock, f"k{i}"))).id for i in range(2)]
            assert [e.id for e in await live.claim("live", 10, 30.0)] == ids
            return await hasty.claim("hasty", 10, 30.0)

    taken = run(scenario())
    assert taken == [], "a process whose clock is ahead took live claims of another"


# pipelined writes: an error comes back late, and is still its own write's -------------------


def test_transact_failing_statement_leaves_nothing_and_others_commit(postgres_store: str) -> None:
    # The statements of a write are sent without waiting for their answers: the failing one
    # is still the function's own error, and only its savepoint is rolled back.
    def half_then_fail(db: Any) -> None:
        db.execute("INSERT INTO command_expectations VALUES ('c-bad', 'd', 1.0, 1.0)")
        db.execute("INSERT INTO command_expectations VALUES ('c-bad', 'd', 1.0, 1.0)")

    def fine(db: Any) -> str:
        db.execute("INSERT INTO command_expectations VALUES ('c-ok', 'd', 1.0, 1.0)")
        return "ok"

    async def scenario() -> list[Any]:
        async with PostgresInbox(postgres_store, clock=FakeClock()) as inbox:
            results = await asyncio.gather(
                inbox.transact(fine),
                inbox.transact(half_then_fail),
                inbox.append(incoming(FakeClock(), "k")),
                inbox.transact(fine),
                return_exceptions=True,
            )
            rows = await inbox.read(
                lambda db: db.execute("SELECT command_id FROM command_expectations").fetchall()
            )
            return [results, rows, len(await inbox.find(Selection()))]

    (ok, failed, accepted, again), rows, entries = run(scenario())
    assert ok == "ok" and isinstance(failed, InboxError) and not isinstance(accepted, Exception)
    assert isinstance(again, InboxError)  # its row is c-ok's again: its own error
    assert "duplicate key" in str(failed) and rows == [("c-ok",)] and entries == 1


class Flaky:
    """A projection whose SQL fails on the device ``broken`` (after the trackers ran for it),
    without reading an answer: the error comes back later, in the pipeline."""

    name = "flaky"
    handles = frozenset({"deviceDataChanged"})

    def apply(self, db: Any, entry_id: int, received_at: float, notification: Any) -> None:
        if notification.device_id == "broken":
            db.execute("INSERT INTO devices (device_id) VALUES (?)", ("broken",))

    def reset(self, db: Any) -> None:
        pass


def test_projection_failing_statement_keeps_the_entry_and_the_other_entries_state(
    postgres_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    projections = (*trackers.PROJECTIONS, Flaky())

    def item(device: str) -> Incoming:
        n = testing.build("deviceDataChanged", device_id=device, seed=len(device))
        return Incoming.from_notification(n, body=n.raw, path=RECEIVE, headers={}, received_at=1.0)

    async def scenario() -> list[Any]:
        async with PostgresInbox(postgres_store, projections=projections) as inbox:
            results = await asyncio.gather(
                *(inbox.append(item(d)) for d in ("ok1", "broken", "ok2"))
            )
            assert all(not r.duplicate for r in results)
            assert len(await inbox.find(Selection())) == 3
            return await inbox.read(
                lambda db: [trackers.get_device(db, d) for d in ("ok1", "broken", "ok2")]
            )

    ok1, broken, ok2 = run(scenario())
    assert ok1 is not None and ok2 is not None
    assert broken is None  # its tracker changes alone were rolled back
    assert "failed; the entry is kept all the same" in caplog.text


# hot handoff and wake-ups across processes ---------------------------------------------------


def test_handoff_waits_for_entries_opened_in_the_same_transaction(postgres_store: str) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        async with PostgresInbox(postgres_store, clock=clock) as inbox:
            await handoff_waits_in_one_transaction(inbox, clock)

    run(scenario())


def test_attached_owner_gets_new_entries_claimed_after_commit(postgres_store: str) -> None:
    clock = FakeClock()

    async def scenario() -> tuple[Entry, float]:
        async with PostgresInbox(postgres_store, clock=clock) as inbox:
            first = await attached_owner_claims(inbox, clock)
            (now,) = await inbox.read(lambda db: db.execute(f"SELECT {DB_NOW}").fetchone())
            return first, now

    first, now = run(scenario())
    assert first.lease_until is not None and now < first.lease_until <= now + 30  # its clock


def test_attached_owner_does_not_take_a_device_another_process_holds(postgres_store: str) -> None:
    clock = FakeClock()
    handed_a: list[Entry] = []
    handed_b: list[Entry] = []

    async def scenario() -> None:
        async with (
            PostgresInbox(postgres_store, clock=clock) as a,
            PostgresInbox(postgres_store, clock=clock) as b,
        ):
            a.attach("owner-a", on_claimed=handed_a.extend)
            b.attach("owner-b", on_claimed=handed_b.extend)
            first = await a.append(incoming(clock, "a", device="d1"))
            # Appended in the same batch by the other process: d1 is held by owner-a.
            later, elsewhere = await asyncio.gather(
                b.append(incoming(clock, "b", device="d1")),
                b.append(incoming(clock, "c", device="d2")),
            )
            assert [e.id for e in handed_a] == [first.id]
            assert [e.id for e in handed_b] == [elsewhere.id]
            assert (await b.get(later.id)).state == "pending"
            assert await b.claim("owner-b", 10, 30) == []  # it would overtake owner-a's entry
            assert [e.id for e in await a.claim("owner-a", 10, 30)] == [later.id]

    run(scenario())


def test_entry_handed_over_while_a_claim_is_under_way_reaches_the_owner_after_the_claimed_ones(
    postgres_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The claim commits X of d1 for owner "me"; before its rows reach the event loop, Y of d1
    # is appended and, its device held by "me" alone, claimed for "me" at once. Handed over
    # first, Y could begin before X: the owner must get it after the claim's rows.
    from iotpush.inbox import postgres

    clock = FakeClock()
    seen: list[tuple[str, list[int]]] = []
    handed = threading.Event()
    room = [False]
    plain = postgres.claim_rows

    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        async with PostgresInbox(postgres_store, clock=clock) as inbox:

            def on_claimed(entries: list[Entry]) -> None:
                seen.append(("handed", [e.id for e in entries]))
                handed.set()

            inbox.attach("me", on_claimed=on_claimed, has_room=lambda: room[0])
            x = await inbox.append(incoming(clock, "x", device="d1"))  # no room: left pending
            room[0] = True
            later: list[int] = []

            def claim_rows(conn: Any, *args: Any) -> list[Any]:
                rows = plain(conn, *args)  # committed
                append = inbox.append(incoming(clock, "y", device="d1"))
                later.append(asyncio.run_coroutine_threadsafe(append, loop).result(20).id)
                handed.wait(2)  # the hand-over, if it comes before the claim returns
                return rows

            monkeypatch.setattr(postgres, "claim_rows", claim_rows)
            claimed = await inbox.claim("me", 10, 30)
            seen.append(("claimed", [e.id for e in claimed]))
            async with asyncio.timeout(20):
                while len(seen) < 2:
                    await asyncio.sleep(0.01)
            inbox.attach(None)
            return x.id, later[0]

    x, y = run(scenario())
    assert seen == [("claimed", [x]), ("handed", [y])]


def test_an_entry_left_by_another_process_is_claimed_on_its_notification(
    postgres_store: str,
) -> None:
    # The dispatcher polls once an hour: only the other process's NOTIFY can wake it.
    from iotpush import Receiver

    clock = FakeClock()
    receiver = Receiver()
    got: list[str] = []

    @receiver.on("deviceDataChanged")
    async def on_data(n: Any) -> None:
        got.append(n.device_id)

    body = (
        b'{"notifyType":"deviceDataChanged","deviceId":"d9","gatewayId":"d9","service":'
        b'{"serviceId":"s","serviceType":"s","data":{"v":1},"eventTime":"20261121T101500Z"}}'
    )
    n = decode(body, "notify")
    item = Incoming.from_notification(n, body=body, path=RECEIVE, headers={}, received_at=1.0)

    async def scenario() -> None:
        from iotpush import Dispatcher

        async with (
            PostgresInbox(postgres_store, clock=clock) as a,
            PostgresInbox(postgres_store) as b,
        ):
            dispatcher = Dispatcher(b, receiver, poll_interval=3600)
            await dispatcher.start()
            try:
                await asyncio.sleep(0.2)  # its first claim found nothing: it waits
                await a.append(item)  # no dispatcher here: left for another process
                async with asyncio.timeout(20):
                    while not got:
                        await asyncio.sleep(0.01)
            finally:
                await dispatcher.stop(grace=5)

    run(scenario())
    assert got == ["d9"]


def test_one_process_of_a_cluster_runs_a_retention_round_at_a_time(
    postgres_store: str, caplog: pytest.LogCaptureFixture
) -> None:
    from iotpush.events import PurgeRound
    from iotpush.retention import Retention

    clock = FakeClock()
    purge = {"keep": 1.0, "finished": trackers.FINISHED, "finished_keep": 1.0, "clock": clock}

    async def scenario() -> tuple[bool, object, object, bool]:
        async with (
            PostgresInbox(postgres_store, clock=clock) as a,
            PostgresInbox(postgres_store, clock=clock) as b,
        ):
            async with a.purge_turn() as first:
                async with b.purge_turn() as second:  # another process's round meanwhile
                    pass
                skipped = await Retention(b, trackers.HISTORIES, **purge).purge()  # type: ignore[arg-type]
            ran = await Retention(b, trackers.HISTORIES, **purge).purge()  # type: ignore[arg-type]
            return first, skipped, ran, second

    with caplog.at_level(logging.DEBUG, "iotpush.retention"):
        first, skipped, ran, second = run(scenario())
    assert (first, second) == (True, False)
    assert skipped is None and isinstance(ran, PurgeRound)
    assert "another process is purging the store; round skipped" in caplog.text
