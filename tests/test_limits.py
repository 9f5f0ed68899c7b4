"""Limits and backpressure through a real server on loopback: JSON bounds, slow clients, load.

Slow clients are raw sockets that send a little and then wait; a slow store is a SQLite file
whose write lock another connection holds. What the tests check are answers and counts (of
requests held, writes queued, rows kept), never durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from iotpush import Config, create_app
from iotpush._jsonlimits import JSONLimits, Violation
from iotpush._slowclients import with_header_timeout
from iotpush.events import Received, Refused
from iotpush.inbox.sqlite import SQLiteInbox
from iotpush.server import uvicorn_options
from tests.conftest import EXAMPLES, RECEIVE, Recorder, Tally, quarantined, running, wait_until

JSON = {"content-type": "application/json"}
BODY = EXAMPLES["04-deviceDataChanged"]


def with_extra(member: Any) -> bytes:
    """A valid notification carrying ``member`` as an unknown member ``x``."""
    data = json.loads(BODY)
    data["x"] = member
    return json.dumps(data).encode()


def nested(levels: int) -> Any:
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


SMALL = JSONLimits(max_depth=4, max_members=5, max_string=20)


@pytest.mark.parametrize(
    ("limits", "body", "expected"),
    [
        (SMALL, b'{"a": [[1]]}', None),
        (SMALL, b'{"a": [[[[1]]]]}', Violation("JSON nested deeper than 4 levels", "$.a[0][0][0]")),
        (SMALL, b'{"a": "' + b"x" * 20 + b'"}', None),
        (SMALL, b'{"a": [1, "' + b"x" * 21 + b'"]}', Violation("string longer than 20 characters",
                                                              "$.a[1]")),
        (SMALL, b'{"' + b"k" * 21 + b'": 1}', Violation("key longer than 20 characters", "$")),
        (SMALL, b'{"a": [1, 2, 3, 4, 5]}', None),
        (SMALL, b'{"a": {"b": [1, 2, 3, 4, 5, 6]}}', Violation("array has more than 5 members",
                                                             "$.a.b")),
        (SMALL, b'{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}',
         Violation("object has more than 5 members", "$")),
        (SMALL, b'{"a": "\\u0041\\u0041\\u0041\\u0041\\u0041\\u0041"}', None),  # 6 characters
        (SMALL, b"[" * 5000 + b"]" * 5000, Violation("JSON nested deeper than 4 levels", "$")),
        (SMALL, b'{"a": [[[[[1]]]]', None),  # not JSON: the decoder after says what is wrong
        (JSONLimits(0, 0, 0), b'{"a": [[[[[[1, 2, 3, 4, 5, 6]]]]]]}', None),
        (JSONLimits(), with_extra(nested(31)), None),  # the body is level 1, "x" level 2...
        (JSONLimits(), with_extra(nested(32)), Violation("JSON nested deeper than 32 levels",
                                                        "$.x" + "[0]" * 31)),
        (JSONLimits(), with_extra(list(range(1000))), None),
        (JSONLimits(), with_extra("é" * 65536), None),
        (JSONLimits(), with_extra("é" * 65537), Violation("string longer than 65536 characters",
                                                         "$.x")),
    ],
    ids=["within", "deep", "string-at-bound", "long-string", "long-key", "members-at-bound",
         "array-members", "object-members", "escapes-are-characters", "very-deep", "not-json",
         "off", "default-depth-at-bound", "default-depth-beyond", "default-members-at-bound",
         "default-string-at-bound", "default-string-beyond"],
)  # fmt: skip
def test_json_limits_check_body_answers_first_violation_with_its_path(
    limits: JSONLimits, body: bytes, expected: Violation | None
) -> None:
    assert limits.check(body) == expected


@pytest.mark.parametrize("example", sorted(EXAMPLES), ids=sorted(EXAMPLES))
def test_json_limits_defaults_accept_every_spec_example(example: str) -> None:
    assert JSONLimits().check(EXAMPLES[example]) is None


@pytest.mark.parametrize(
    ("body", "field", "error"),
    [
        (with_extra(nested(4)), "$.x[0][0][0]", "JSON nested deeper than 4 levels"),
        (with_extra(list(range(11))), "$.x", "array has more than 10 members"),
        (with_extra("y" * 2000), "$.x", "string longer than 1000 characters"),
    ],
    ids=["depth", "members", "string"],
)
def test_server_body_beyond_a_json_bound_is_400_naming_path_and_bound_and_quarantined(
    serve: Callable[..., Any], db: str, body: bytes, field: str, error: str
) -> None:
    recorder = Recorder()
    limits = {"max_depth": 4, "max_members": 10, "max_string": 1000}
    with serve(recorder, **limits) as (url, app):
        tally = Tally(app.events)
        refused = httpx.post(url + RECEIVE, content=body, headers=JSON)
        accepted = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
        recorder.wait_for(1)
    assert refused.status_code == 400
    assert refused.json() == {"error": error, "path": field}
    assert accepted.status_code == 200
    [kept] = quarantined(db)
    assert (kept.status, kept.reason, kept.field, kept.body) == (400, error, field, body)
    assert tally(Refused, reason="too_deep", status=400) == 1


# slow clients -------------------------------------------------------------------------------


@contextlib.contextmanager
def connection(url: str) -> Iterator[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        yield sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails on a 10 s silence)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):  # closed with our bytes unread: a reset
        while chunk := sock.recv(65536):
            received += chunk
    return received


def health(sock: socket.socket) -> bytes:
    """Ask ``/health`` on the connection; its whole answer."""
    sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        answer += sock.recv(65536)
    return answer


def test_server_body_slower_than_body_timeout_is_408_closed_and_quarantined(
    serve: Callable[..., Any], db: str
) -> None:
    with serve(body_timeout=0.5) as (url, app), connection(url) as sock:
        tally = Tally(app.events)
        head = f"POST {RECEIVE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        sock.sendall(f"{head}content-length: {len(BODY)}\r\n\r\n".encode() + BODY[:10])
        answer = read_until_closed(sock)  # the rest never comes
        alive = httpx.post(url + RECEIVE, content=BODY, headers=JSON)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close" in rest.lower()
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {
        "error": "the body did not arrive within 0.5 s",
        "path": "$",
    }
    assert alive.status_code == 200
    [kept] = quarantined(db)
    assert (kept.status, kept.body) == (408, BODY[:10])
    assert tally(Refused, reason="timeout", status=408) == 1


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_server_headers_slower_than_header_timeout_get_the_connection_closed(
    serve: Callable[..., Any], base: type[Any]
) -> None:
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    tally = Tally(app.events)
    with running(app, http=with_header_timeout(base, 0.5)) as url, connection(url) as sock:
        # A request answered in time keeps the connection; the next one, trickled, does not.
        first = health(sock)
        sent = 0
        with contextlib.suppress(OSError):  # the server may close while we send
            for byte in f"POST {RECEIVE} HTTP/1.1\r\nhost: x\r\n".encode():
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
                if sent == 40:
                    break
        closed = read_until_closed(sock)
    assert first.startswith(b"HTTP/1.1 200")
    assert closed == b""  # closed, without answering the trickled request
    assert tally(Received) == 0


def test_server_header_timeout_class_keeps_the_keep_alive_bound_with_httptools() -> None:
    # With httptools the header timeout's sweep also enforces keep-alive (uvicorn's own timer
    # per request is not armed): an idle connection still goes after the keep-alive timeout.
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    protocol = with_header_timeout(HttpToolsProtocol, 30.0)
    with running(app, http=protocol, timeout_keep_alive=1) as url, connection(url) as sock:
        answer = health(sock)
        rest = read_until_closed(sock)  # idle: closed by the server
    assert answer.startswith(b"HTTP/1.1 200")
    assert rest == b""


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_server_header_timeout_lets_a_slow_request_past_keep_alive(base: type[Any]) -> None:
    # Keep-alive bounds an idle connection; a request whose bytes are coming is bound by the
    # header timeout only (as with uvicorn's own keep-alive timer).
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    protocol = with_header_timeout(base, 30.0)
    with running(app, http=protocol, timeout_keep_alive=1) as url, connection(url) as sock:
        first = health(sock)
        for byte in b"GET /health HTTP/1.1\r\n":
            sock.sendall(bytes([byte]))
            time.sleep(0.08)  # 1.8 s in all: past the keep-alive bound
        sock.sendall(b"host: x\r\n\r\n")
        second = b""
        while not second.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            second += chunk
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_server_header_timeout_answers_pipelined_requests(base: type[Any]) -> None:
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    with running(app, http=with_header_timeout(base, 30.0)) as url, connection(url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n" * 3)
        answers = b""
        while answers.count(b'{"status":"ok"}') < 3:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            answers += chunk
    assert answers.count(b"HTTP/1.1 200") == 3


def cycles_left() -> int:
    """uvicorn request cycles still in memory (without keeping any: a list would)."""
    gc.collect()
    return sum(type(o).__name__ == "RequestResponseCycle" for o in gc.get_objects())


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_server_header_timeout_keeps_no_finished_request_alive(base: type[Any]) -> None:
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    with running(app, http=with_header_timeout(base, 30.0)) as url:
        for _ in range(2):  # connections closed: their timers go with them
            with httpx.Client() as client:
                answers = [client.get(url + "/health").status_code for _ in range(30)]
                assert answers == [200] * 30
                # Each finished request (its scope, its body) must be free to go: one waiting
                # timer per request would hold on to all 30 of this connection's.
                assert cycles_left() <= 3

        # The server thread learns of the closed connections a moment later.
        wait_until(lambda: cycles_left() == 0, timeout=5, what="closed connections to be freed")


def test_server_without_header_timeout_keeps_a_trickling_client_waiting() -> None:
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    with running(app) as url, connection(url) as sock:
        for byte in b"GET /health HTTP/1.1\r\n":
            sock.sendall(bytes([byte]))
            time.sleep(0.05)  # 1.1 s in all: past the bound of the test above
        sock.sendall(b"host: x\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")


def test_uvicorn_options_carry_timeouts_and_concurrency_limit() -> None:
    options = uvicorn_options(
        Config(header_timeout=7.0, keep_alive_timeout=3, limit_concurrency=50)
    )
    assert (options["timeout_keep_alive"], options["limit_concurrency"]) == (3, 50)
    assert options["http"].__name__.startswith("HeaderTimeout")
    assert uvicorn_options(Config(header_timeout=None))["http"] == "auto"


def test_server_closes_an_idle_connection_after_keep_alive_timeout() -> None:
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    options = uvicorn_options(Config(keep_alive_timeout=1))
    with (
        running(app, timeout_keep_alive=options["timeout_keep_alive"]) as url,
        connection(url) as sock,
    ):
        answer = health(sock)
        rest = read_until_closed(sock)  # idle: closed by the server
    assert answer.startswith(b"HTTP/1.1 200")
    assert rest == b""


def test_server_beyond_limit_concurrency_answers_503() -> None:
    app = create_app(Config(receiver=Recorder(), store="memory://"))
    limit = uvicorn_options(Config(limit_concurrency=2))["limit_concurrency"]
    with running(app, limit_concurrency=limit) as url, connection(url), connection(url):
        response = httpx.get(url + "/health")  # a third connection
    assert response.status_code == 503


# load -------------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(db: Path) -> Iterator[None]:
    """Hold the SQLite write lock of ``db`` from another connection: the inbox cannot commit."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as lock:
        lock.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")


def post(url: str) -> Callable[[int], httpx.Response]:
    def one(i: int) -> httpx.Response:
        data = json.loads(BODY)
        data["deviceId"] = data["gatewayId"] = f"device-{i}"
        return httpx.post(url + RECEIVE, content=json.dumps(data), headers=JSON, timeout=30)

    return one


def test_server_beyond_max_in_flight_answers_503_at_once_without_reading_the_body(
    tmp_path: Path,
) -> None:
    db = tmp_path / "inbox.db"
    recorder = Recorder()
    config = Config(receiver=recorder, store=f"sqlite:///{db}", busy_timeout=20, max_in_flight=3)
    app = create_app(config)
    tally = Tally(app.events)
    with running(app) as url, ThreadPoolExecutor(8) as pool:
        with locked(db):
            held = [pool.submit(post(url), i) for i in range(3)]
            wait_until(lambda: app.app.in_flight == 3, what="3 pushes held by the lock")
            shed = [post(url)(i) for i in range(3, 8)]  # answered while the lock is still held
            still_held = sum(not f.done() for f in held)
        answers = [f.result() for f in held]
        recorder.wait_for(3)
    assert still_held == 3
    assert [r.status_code for r in shed] == [503] * 5
    assert {r.headers["retry-after"] for r in shed} == {"1"}
    assert shed[0].json() == {
        "error": "too many pushes are being received now; retry",
        "path": "$",
    }
    assert [r.status_code for r in answers] == [200] * 3
    assert tally(Refused, reason="busy", status=503) == 5
    assert app.app.in_flight == 0
    assert quarantined(f"sqlite:///{db}") == []  # no body was read, nothing kept


def test_server_beyond_max_pending_writes_answers_503_and_keeps_the_queue_bounded(
    tmp_path: Path,
) -> None:
    db = tmp_path / "inbox.db"
    recorder = Recorder()
    config = Config(
        receiver=recorder, store=f"sqlite:///{db}", busy_timeout=20, max_in_flight=None,
        max_pending_writes=2,
    )  # fmt: skip
    app = create_app(config)
    inbox = app.inbox
    assert isinstance(inbox, SQLiteInbox)
    longest: list[int] = []
    with running(app) as url, ThreadPoolExecutor(12) as pool:
        writer = inbox._writer
        assert writer is not None
        # Count the pushes that reached the writer: each one is then either queued or refused
        # (at once), whatever the load, and not still on its way to one or the other.
        reached = [0]
        write = writer.write

        async def counted(fn: Any, *, wakes: bool = False, bounded: bool = False) -> Any:
            reached[0] += bounded
            return await write(fn, wakes=wakes, bounded=bounded)

        writer.write = counted  # type: ignore[method-assign]
        with locked(db):
            futures: list[Future[httpx.Response]] = []
            for i in range(12):
                futures.append(pool.submit(post(url), i))
                wait_until(lambda n=i + 1: reached[0] == n, what=f"push {i + 1} at the writer")
                longest.append(len(writer._pending))
            wait_until(lambda: sum(f.done() for f in futures) == writer.refused, what="503s")
            refused = [f.result() for f in futures if f.done()]
            held = sum(not f.done() for f in futures)
        answers = [f.result() for f in futures]
        wait_until(lambda: len(recorder.seen) == held, what="the held pushes' deliveries")
    assert max(longest) <= 2 + 1  # the pushes, and at most a write of the dispatcher
    assert refused and {r.status_code for r in refused} == {503}
    assert refused[0].headers["retry-after"] == "5"
    assert held + len(refused) == 12
    assert held <= 2 + 1  # the queue, and the batch waiting for the lock
    assert sorted(r.status_code for r in answers) == [200] * held + [503] * len(refused)
    assert writer.refused == len(refused)
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM inbox").fetchone()
    assert rows == (held,)


# quarantine --------------------------------------------------------------------------------


def test_server_flooded_with_bad_bodies_keeps_quarantine_within_bounds(
    serve: Callable[..., Any], db: str, caplog: pytest.LogCaptureFixture
) -> None:
    bodies = [b'{"notifyType": "nope", "n": %d, "pad": "%s"}' % (i, b"p" * 100) for i in range(30)]
    with serve(quarantine_max_rows=10, quarantine_max_body=40) as (url, app):
        tally = Tally(app.events)
        answers = [httpx.post(url + RECEIVE, content=b, headers=JSON) for b in bodies]
        # Each refusal is answered before it is kept: wait for the last one to be kept.
        wait_until(lambda: tally(Refused, status=400) == 30 and app.app.in_flight == 0)
        dropped = app.inbox.quarantine_dropped
    kept = quarantined(db)
    assert {r.status_code for r in answers} == {400}
    assert [r.body for r in kept] == [b[:40] for b in bodies[-10:]]
    assert dropped == 20
    warnings = [r.getMessage() for r in caplog.records if "maximum of 10" in r.getMessage()]
    assert warnings == ["the quarantine holds its maximum of 10 refusals: deleted the oldest"
                        " (1 so far); see `iotpush quarantine ls`"]  # fmt: skip


# options ------------------------------------------------------------------------------------


def test_cli_serve_limit_options_and_their_environment_variables_reach_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from iotpush.cli import main
    from iotpush.cli import serve as cli_module

    configs: list[Config] = []
    monkeypatch.setattr(cli_module, "run", configs.append)
    args = ["serve", "--max-depth", "8", "--max-members", "50", "--max-string", "0",
            "--max-in-flight", "0", "--max-pending-writes", "20", "--body-timeout", "1m",
            "--header-timeout", "0", "--keep-alive-timeout", "2", "--limit-concurrency", "300",
            "--quarantine-max-rows", "0", "--quarantine-max-body", "512"]  # fmt: skip
    env = {"IOTPUSH_SERVE_MAX_DEPTH": "16", "IOTPUSH_SERVE_MAX_IN_FLIGHT": "64",
           "IOTPUSH_SERVE_BODY_TIMEOUT": "10s",
           "IOTPUSH_SERVE_QUARANTINE_MAX_ROWS": "500"}  # fmt: skip
    runner = CliRunner()
    for result in (
        runner.invoke(main, args),
        runner.invoke(main, ["serve"], env=env),
    ):
        assert result.exit_code == 0, result.output
    given, from_env = configs
    assert (given.max_depth, given.max_members, given.max_string, given.max_in_flight,
            given.max_pending_writes, given.body_timeout, given.header_timeout,
            given.keep_alive_timeout, given.limit_concurrency, given.quarantine_max_rows,
            given.quarantine_max_body) == (
                8, 50, 0, None, 20, 60.0, None, 2, 300, None, 512)  # fmt: skip
    assert (from_env.max_depth, from_env.max_in_flight, from_env.body_timeout,
            from_env.quarantine_max_rows) == (16, 64, 10.0, 500)  # fmt: skip
    assert (from_env.max_members, from_env.header_timeout, from_env.limit_concurrency) == (
        1000, 30.0, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_depth": -1}, "--max-depth must be 0 (no bound) or more"),
        ({"quarantine_max_body": -5}, "--quarantine-max-body must be 0 (no bound) or more"),
        ({"max_in_flight": 0}, "--max-in-flight must be above 0"),
        ({"body_timeout": 0.0}, "--body-timeout must be above 0"),
        ({"keep_alive_timeout": 0}, "--keep-alive-timeout must be at least 1 second"),
    ],
    ids=["depth", "quarantine-body", "in-flight", "body-timeout", "keep-alive"],
)
def test_config_check_limit_out_of_range_is_config_error(
    changes: dict[str, Any], message: str
) -> None:
    from iotpush import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**changes).check()


def test_deadlines_cancel_only_tasks_past_theirs_and_tell_their_cancellation_apart() -> None:
    from iotpush._deadlines import Deadlines

    deadlines = Deadlines(0.1)
    outcomes: dict[str, str] = {}

    async def step(name: str, wait: float) -> None:
        task = deadlines.enter()
        try:
            await asyncio.sleep(wait)
            outcomes[name] = "done"
        except asyncio.CancelledError:
            outcomes[name] = "expired" if deadlines.expired(task) else "cancelled"
            if outcomes[name] == "cancelled":
                raise
        finally:
            deadlines.leave(task)

    async def scenario() -> None:
        quick = asyncio.create_task(step("quick", 0))
        slow = asyncio.create_task(step("slow", 10))
        shut = asyncio.create_task(step("shut", 10))
        await asyncio.sleep(0)
        shut.cancel()  # cancelled by someone else: not the deadline's doing
        await asyncio.gather(quick, slow, shut, return_exceptions=True)
        assert (slow.cancelling(), shut.cancelled()) == (0, True)

    asyncio.run(scenario())
    assert outcomes == {"quick": "done", "slow": "expired", "shut": "cancelled"}
