"""The NATS JetStream sink: subjects and headers, and delivery through a real NATS server.

Tests that need NATS use ``IOTPUSH_TEST_NATS`` (default ``nats://127.0.0.1:4222``) and skip when
it does not answer, unless ``IOTPUSH_REQUIRE_SERVICES=1`` (CI), where they fail. Each test gets
its own stream and subject prefix, and deletes the stream afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from iotpush import Config, create_app
from iotpush.cli import main
from iotpush.events import Events, Published, SinkFailed
from iotpush.exceptions import ConfigError
from iotpush.inbox import Entry
from iotpush.inbox.sqlite import SQLiteInbox
from iotpush.sinks import Publisher, open_sink
from iotpush.sinks.nats import NatsSink, headers, message_id, subject, token
from tests._inbox import FakeClock, incoming
from tests._servers import Server, free_port, post_all, pushes, rows, serve
from tests.conftest import (
    EXAMPLES,
    Recorder,
    Tally,
    example_path,
    running,
    service_missing,
    wait_until,
)

NATS_URL = os.environ.get("IOTPUSH_TEST_NATS", "nats://127.0.0.1:4222")
JSON = {"content-type": "application/json"}


def entry(id: int = 7, *, type: str = "deviceDataChanged", device: str | None = "d1") -> Entry:
    return Entry(
        id=id, received_at=1_795_256_100.25, type=type, device=device, key="k:1", path="/",
        body=b"{}", headers={}, state="pending",
    )  # fmt: skip


# subjects and headers: no NATS needed --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("meter-0001", "meter-0001"),
        ("a.b", "a%2Eb"),
        ("*", "%2A"),
        (">", "%3E"),
        ("50%", "50%25"),
        ("with space", "with%20space"),
        ("tab\tnewline\n", "tab%09newline%0A"),
        ("水表", "%E6%B0%B4%E8%A1%A8"),
        ("", "_"),
        (None, "_"),
        ("_", "%5F"),
        ("a_b:c/d@e", "a_b:c/d@e"),
    ],
    ids=[
        "plain", "dot", "star", "gt", "percent", "space", "control", "non-ascii", "empty", "none",
        "underscore-alone", "other-punctuation",
    ],
)  # fmt: skip
def test_token_reserved_characters_are_percent_encoded(value: str | None, expected: str) -> None:
    assert token(value) == expected


def test_subject_device_with_dots_and_wildcards_stays_three_tokens_after_the_prefix() -> None:
    made = subject("iotpush.site1", entry(device="a.b.*.>"))
    assert made == "iotpush.site1.deviceDataChanged.a%2Eb%2E%2A%2E%3E"
    assert made.split(".")[2:] == ["deviceDataChanged", "a%2Eb%2E%2A%2E%3E"]


def test_subject_entry_without_device_uses_the_no_device_token() -> None:
    assert subject("iotpush", entry(type="deviceModelAdded", device=None)) == (
        "iotpush.deviceModelAdded._"
    )


def test_message_id_same_key_different_entries_differ_and_repeat_for_the_same_entry() -> None:
    assert message_id(entry(1)) != message_id(entry(3))
    assert message_id(entry(1)) == message_id(entry(1)) == "k:1#1"


def test_headers_name_entry_type_device_and_time_and_escape_unsafe_values() -> None:
    assert headers(entry(device="dev ice\r\n%")) == {
        "Nats-Msg-Id": "k:1#7",
        "Content-Type": "application/json",
        "Iotpush-Entry-Id": "7",
        "Iotpush-Type": "deviceDataChanged",
        "Iotpush-Received-At": "2026-11-21T10:15:00.250Z",
        "Iotpush-Device": "dev%20ice%0D%0A%25",
    }
    assert "Iotpush-Device" not in headers(entry(device=None))


def test_open_sink_url_options_set_stream_prefix_and_durations() -> None:
    sink = open_sink("nats://u:secret@h:4222?stream=S1&prefix=a.b&max_age=1d&duplicate_window=1h")
    assert isinstance(sink, NatsSink)
    assert (sink.name, sink.stream, sink.prefix) == ("nats:S1", "S1", "a.b")
    assert (sink.max_age, sink.duplicate_window) == (86400.0, 3600.0)
    assert (sink.url, sink.display) == ("nats://u:secret@h:4222", "nats://h:4222")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("kafka://h:9092", "unsupported sink"),
        ("nats://h:4222?colour=red", "unknown NATS sink option 'colour'"),
        ("nats://h:4222?max_age=soon", "sink option max_age"),
        ("nats://h:4222?stream=a.b", "NATS stream name"),
        ("nats://h:4222?prefix=a.*", "NATS subject prefix"),
        ("nats://h:4222?prefix=a..b", "NATS subject prefix"),
        ("nats://h:4222?max_age=1h&duplicate_window=2h", "duplicate window"),
    ],
    ids=["scheme", "option", "duration", "stream", "wildcard", "empty-token", "window"],
)
def test_open_sink_bad_url_raises_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_sink(url)


def test_nats_sink_without_the_extra_raises_one_line_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    with pytest.raises(ConfigError) as raised:
        create_app(Config(store="memory://", sinks=("nats://127.0.0.1:4222",)))
    assert str(raised.value) == "the NATS sink needs nats-py: pip install 'iotpush[nats]'"


def test_import_iotpush_and_an_app_without_sinks_do_not_import_nats() -> None:
    code = (
        "import sys, iotpush; iotpush.create_app(store='memory://');"
        "print(sorted(m for m in sys.modules if m == 'nats' or m.startswith('nats.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_serve_unsupported_sink_exits_with_one_line() -> None:
    result = CliRunner().invoke(main, ["serve", "--store", "memory://", "--sink", "amqp://h"])
    assert result.exit_code == 1
    assert result.output == "Error: unsupported sink 'amqp://h': use nats://HOST:PORT\n"


def test_cli_inbox_stats_shows_the_unpublished_count_by_sink(tmp_path: Path) -> None:
    db, clock = tmp_path / "inbox.db", FakeClock(time.time())

    async def fill() -> None:
        async with SQLiteInbox(db, clock=clock, outbox=["nats:A"]) as inbox:
            for key in ("a", "b", "a"):
                await inbox.append(incoming(clock, key))

    asyncio.run(fill())
    result = CliRunner().invoke(main, ["inbox", "stats", "--store", f"sqlite:///{db}"])
    assert result.exit_code == 0, result.output
    assert "unpublished: nats:A 2\n" in result.output


# a real NATS server --------------------------------------------------------------------------


def nats_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 4222


@pytest.fixture(scope="module")
def nats_url() -> str:
    """The test NATS server's URL; skips (or fails where services are required) without one."""
    try:
        socket.create_connection(nats_address(NATS_URL), timeout=2).close()
    except OSError as exc:
        message = (
            f"NATS not reachable at {NATS_URL} ({exc}); start it (nats-server -js) or set"
            " IOTPUSH_TEST_NATS=nats://HOST:PORT"
        )
        service_missing(message)
    return NATS_URL


@dataclass(frozen=True)
class Stream:
    """A stream and subject prefix of one test's own."""

    url: str
    name: str
    prefix: str

    def sink_url(self, url: str | None = None) -> str:
        return f"{url or self.url}?stream={self.name}&prefix={self.prefix}"

    def subject(self, type: str, device: str | None) -> str:
        return f"{self.prefix}.{token(type)}.{token(device)}"


@pytest.fixture
def stream(nats_url: str) -> Iterator[Stream]:
    tag = uuid.uuid4().hex[:10]
    made = Stream(nats_url, f"TEST_{tag}", f"test{tag}")
    yield made

    async def delete() -> None:
        import nats

        nc = await nats.connect(nats_url)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(made.name)
        finally:
            await nc.close()

    asyncio.run(delete())


@dataclass(frozen=True)
class Message:
    subject: str
    headers: dict[str, str]
    data: bytes


def consume(
    stream: Stream, durable: str, expect: int, *, filter: str | None = None, timeout: float = 30
) -> list[Message]:
    """Fetch and ack messages from a durable pull consumer until ``expect`` came (or
    ``timeout``), then look once more: a copy would show up."""

    async def fetch() -> list[Message]:
        import nats

        nc = await nats.connect(stream.url)
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout
            while True:  # the sink creates the stream once it reaches NATS
                try:
                    sub = await js.pull_subscribe(
                        filter or f"{stream.prefix}.>", durable=durable, stream=stream.name
                    )
                    break
                except nats.js.errors.NotFoundError:
                    if time.monotonic() > deadline:
                        return []
                    await asyncio.sleep(0.1)
            got: list[Message] = []
            while time.monotonic() < deadline:
                want = max(expect - len(got), 1)
                wait = 1.0 if len(got) < expect else 0.5
                try:
                    batch = await sub.fetch(min(want, 256), timeout=wait)
                except TimeoutError:  # nats' own, or asyncio's when a loaded machine is late
                    if len(got) >= expect:
                        break
                    continue
                for msg in batch:
                    await msg.ack()
                    got.append(Message(msg.subject, dict(msg.headers or {}), msg.data))
            return got
        finally:
            await nc.close()

    return asyncio.run(fetch())


def stream_count(stream: Stream) -> int:
    async def count() -> int:
        import nats

        nc = await nats.connect(stream.url)
        try:
            info = await nc.jetstream().stream_info(stream.name)
            return int(info.state.messages)
        finally:
            await nc.close()

    return asyncio.run(count())


def test_sink_every_example_arrives_once_on_its_subject_with_its_headers(
    stream: Stream, tmp_path: Path
) -> None:
    db = tmp_path / "inbox.db"
    app = create_app(
        Config(receiver=Recorder(), store=f"sqlite:///{db}", sinks=(stream.sink_url(),))
    )
    tally = Tally(app.events)
    with running(app) as url:
        for name, body in EXAMPLES.items():
            answer = httpx.post(url + example_path(name), content=body, headers=JSON)
            assert answer.status_code == 200, (name, answer.text)
        kept = rows(db, "SELECT id, type, device, key, body, received_at FROM inbox ORDER BY id")
        got = consume(stream, "all", len(kept))
        wait_until(lambda: rows(db, "SELECT count(*) FROM outbox") == [(0,)], what="no backlog")
    assert len(kept) == len(EXAMPLES)
    by_id = {int(m.headers["Iotpush-Entry-Id"]): m for m in got}
    assert len(got) == len(by_id) == len(kept)
    for id, type_, device, key, body, received_at in kept:
        message = by_id[id]
        assert message.subject == stream.subject(type_, device)
        assert message.data == body
        assert message.headers["Nats-Msg-Id"] == f"{key}#{id}"
        assert message.headers["Iotpush-Type"] == type_
        assert message.headers.get("Iotpush-Device") == (device or None)
        assert message.headers["Iotpush-Received-At"].startswith(
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(received_at))
        )
    ids = [int(m.headers["Iotpush-Entry-Id"]) for m in got]
    assert ids == sorted(ids)  # published in id order
    assert sum(e.count for e in tally.seen if isinstance(e, Published)) == len(kept)


def test_sink_filtered_consumers_get_one_type_or_one_device(stream: Stream, tmp_path: Path) -> None:
    app = create_app(
        Config(store=f"sqlite:///{tmp_path / 'inbox.db'}", sinks=(stream.sink_url(),)),
        receiver=Recorder(),
    )
    posted = pushes(20, devices=3)  # reports of meter-000..002, every 5th a command status
    with running(app) as url:
        _, refused = asyncio.run(post_all(url, posted, connections=2))
        assert refused == []
        by_type = consume(stream, "by-type", 4, filter=f"{stream.prefix}.nbCommandStatusChanged.>")
        by_device = consume(stream, "by-device", 5, filter=f"{stream.prefix}.*.meter-001")
    assert len(by_type) == 4
    assert {m.headers["Iotpush-Type"] for m in by_type} == {"nbCommandStatusChanged"}
    assert len(by_device) == 5  # pushes 1, 7, 10, 13, 16
    assert {m.headers["Iotpush-Device"] for m in by_device} == {"meter-001"}
    assert {m.headers["Iotpush-Type"] for m in by_device} == {"deviceDataChanged"}


class Gate:
    """A TCP forwarder to NATS on a port of its own: closed (refusing) until `open`."""

    def __init__(self, target: tuple[str, int], port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with self._lock:  # a connection accepted from now on is dropped at once
            self._closed = True
            sockets = [*filter(None, [self._listener]), *self._sockets]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    client.close()
                    return
                server = socket.create_connection(self.target)
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_sink_nats_unreachable_receiving_answers_200_and_the_backlog_is_published_later(
    stream: Stream, tmp_path: Path
) -> None:
    db = tmp_path / "inbox.db"
    gate = Gate(nats_address(stream.url))
    sink = stream.sink_url(f"nats://127.0.0.1:{gate.port}")
    app = create_app(Config(receiver=Recorder(), store=f"sqlite:///{db}", sinks=(sink,)))
    tally = Tally(app.events)
    posted = pushes(30, devices=4)
    try:
        with running(app) as url:
            acked, refused = asyncio.run(post_all(url, posted))
            assert (len(acked), refused) == (30, [])
            assert rows(db, "SELECT count(*) FROM outbox") == [(30,)]
            wait_until(lambda: tally(SinkFailed) >= 1, what="a failed attempt to publish")
            assert rows(db, "SELECT count(*) FROM outbox") == [(30,)]
            assert app.dispatcher.receiver.seen  # delivery to handlers went on
            gate.open()
            got = consume(stream, "late", 30, timeout=60)
            wait_until(lambda: rows(db, "SELECT count(*) FROM outbox") == [(0,)], what="catch-up")
    finally:
        gate.close()
    assert len(got) == 30
    assert {m.data for m in got} == {p.body for p in posted}


def test_sink_nats_lost_mid_run_the_entries_of_the_outage_are_published_once_after(
    stream: Stream, tmp_path: Path
) -> None:
    db = tmp_path / "inbox.db"
    gate = Gate(nats_address(stream.url))
    sink = stream.sink_url(f"nats://127.0.0.1:{gate.port}") + "&ack_timeout=2s"
    app = create_app(Config(receiver=Recorder(), store=f"sqlite:///{db}", sinks=(sink,)))
    tally = Tally(app.events)
    posted = pushes(40, devices=4)
    gate.open()
    try:
        with running(app) as url:
            acked, _ = asyncio.run(post_all(url, posted[:20]))
            first = consume(stream, "durable", 20)
            gate.close()  # NATS goes away: its connections are cut, new ones refused
            acked += asyncio.run(post_all(url, posted[20:]))[0]
            assert len(acked) == 40
            wait_until(lambda: tally(SinkFailed) >= 1, timeout=30, what="a failed publish")
            gate = Gate(nats_address(stream.url), port=gate.port)
            gate.open()
            second = consume(stream, "durable", 20, timeout=60)
            wait_until(lambda: rows(db, "SELECT count(*) FROM outbox") == [(0,)], what="catch-up")
    finally:
        gate.close()
    received = [m.data for m in [*first, *second]]
    assert sorted(received) == sorted(p.body for p in posted)
    assert stream_count(stream) == 40


def test_sink_stream_existing_with_other_settings_is_left_as_it_is_and_logged(
    stream: Stream, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[float, int]:
        import nats

        nc = await nats.connect(stream.url)
        js = nc.jetstream()
        await js.add_stream(
            name=stream.name, subjects=[f"{stream.prefix}.>", "elsewhere.>"], duplicate_window=60
        )
        sink = NatsSink.from_url(stream.sink_url())
        outcome = await sink.publish([entry(1)])
        await sink.close()
        info = await js.stream_info(stream.name)
        await nc.close()
        return info.config.duplicate_window, len(outcome.acknowledged)

    window, acknowledged = asyncio.run(scenario())
    assert (window, acknowledged) == (60.0, 1)
    assert f"the stream {stream.name} exists with subjects" in caplog.text
    assert "duplicate_window 60.0" in caplog.text


def test_sink_entry_larger_than_max_payload_is_refused_and_the_others_published(
    stream: Stream,
) -> None:
    async def scenario() -> Any:
        sink = NatsSink.from_url(stream.sink_url())
        huge = entry(2)
        huge.body = b"x" * (2 * 1024 * 1024)  # NATS's max_payload is 1 MB by default
        outcome = await sink.publish([entry(1), huge, entry(3)])
        await sink.close()
        return outcome

    outcome = asyncio.run(scenario())
    assert (outcome.acknowledged, outcome.refused, outcome.error) == ([1, 3], [2], None)
    assert stream_count(stream) == 2


def test_publisher_crash_after_the_acks_republishes_and_jetstream_drops_the_copies(
    stream: Stream, tmp_path: Path
) -> None:
    db, clock = tmp_path / "inbox.db", FakeClock(time.time())

    async def crash_after_publishing() -> int:
        sink = NatsSink.from_url(stream.sink_url())
        async with SQLiteInbox(db, clock=clock, exclusive=True, outbox=[sink.name]) as inbox:
            for i in range(5):
                await inbox.append(incoming(clock, f"k{i}", device=f"d{i % 2}"))
            taken = await inbox.unpublished(sink.name, "doomed", 10, 60)
            outcome = await sink.publish(taken)  # acknowledged, never marked published
            await sink.close()
        return len(outcome.acknowledged)

    async def restart() -> tuple[int, dict[str, int]]:
        sink = NatsSink.from_url(stream.sink_url())
        async with SQLiteInbox(db, clock=clock, exclusive=True, outbox=[sink.name]) as inbox:
            events = Events()
            tally = Tally(events)
            publisher = Publisher(inbox, sink, events=events)
            await publisher.start()
            async with asyncio.timeout(20):
                while (await inbox.stats()).unpublished:
                    await asyncio.sleep(0.05)
            await publisher.stop()
            published = sum(e.count for e in tally.seen if isinstance(e, Published))
            return published, (await inbox.stats()).unpublished

    assert asyncio.run(crash_after_publishing()) == 5
    published, left = asyncio.run(restart())
    assert (published, left) == (5, {})
    assert stream_count(stream) == 5  # the copies published again were dropped by JetStream
    assert len(consume(stream, "once", 5)) == 5


def serve_process(
    tmp_path: Path, port: int, db: Path, sink: str, name: str
) -> contextlib.AbstractContextManager[Server]:
    """``iotpush serve --sink SINK`` as a subprocess, ready to answer; killed if still up."""
    env = {"IOTPUSH_SERVE_SINK": sink}
    return serve(
        tmp_path, port, "tests.test_sink_nats:quiet", store=f"sqlite:///{db}", env=env, name=name
    )


def quiet() -> Recorder:
    """The receiver of `serve_process`: handlers are not what these tests watch."""
    return Recorder()


@pytest.mark.slow
def test_sink_server_killed_mid_run_and_restarted_publishes_every_200_exactly_once(
    stream: Stream, tmp_path: Path
) -> None:
    db, port = tmp_path / "inbox.db", free_port()
    items = pushes(1200, devices=40)
    first_run, rest = items[:800], items[800:]
    # The first server reaches NATS through a gate that opens late: a backlog builds up, and
    # the kill lands while it is being published.
    gate = Gate(nats_address(stream.url))
    through_gate = stream.sink_url(f"nats://127.0.0.1:{gate.port}")

    with serve_process(tmp_path, port, db, through_gate, "first") as server:

        def open_then_kill(acked: int) -> None:
            if acked == 200:
                gate.open()
            if acked == 500:
                server.process.send_signal(signal.SIGKILL)

        try:
            acked, refused = asyncio.run(post_all(server.url, first_run, on_ack=open_then_kill))
            assert server.process.wait(10) == -signal.SIGKILL
        finally:
            gate.close()
    assert len(acked) >= 500
    assert refused, "every push was acknowledged: the kill did not land mid-run"
    before = consume(stream, "durable", len(acked), timeout=3)  # what made it out before

    with serve_process(tmp_path, port, db, stream.sink_url(), "second") as server:
        acked_again, refused_again = asyncio.run(post_all(server.url, [*refused, *rest]))
        assert refused_again == []
        wait_until(lambda: rows(db, "SELECT count(*) FROM outbox") == [(0,)], 60, "an empty outbox")
        server.process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then raises the signal again for the parent to see.
        assert server.process.wait(20) in (0, -signal.SIGTERM)
    after = consume(stream, "durable", len(items) - len(before))

    received = [m.data for m in [*before, *after]]
    assert len(received) == len(set(received)), "a notification reached the consumer twice"
    assert set(received) == {p.body for p in [*acked, *acked_again]} == {p.body for p in items}
    assert stream_count(stream) == len(items)
