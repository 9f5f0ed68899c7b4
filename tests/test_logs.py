"""`iotpush.logs`: every line with an ISO 8601 time and a level, or one JSON object, however the
app is served; and the start-up summary."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from iotpush.logs import CONTEXT_FIELDS, JSONFormatter, TextFormatter, ensure_handler

from ._servers import ROOT, Server, free_port, serve, wait_ready
from .conftest import EXAMPLES

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: "
)
RECEIVE = "/v1.0.0/messageReceiver"


def record(message: str = "entry %d failed", *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(
        "iotpush.dispatch", logging.WARNING, __file__, 1, message, args or (4,), None
    )
    made.created = 1_800_000_000.25
    made.__dict__.update(extra)
    return made


def test_text_formatter_writes_iso_time_level_and_logger() -> None:
    line = TextFormatter().format(record())
    assert line == "2027-01-15T08:00:00.250Z WARNING iotpush.dispatch: entry 4 failed"


def test_json_formatter_writes_one_object_with_the_entry_context() -> None:
    extra = {
        "entry_id": 4,
        "type": "deviceDeleted",
        "device": "m-1",
        "handler": "app.h",
        "attempt": 2,
    }
    line = JSONFormatter().format(record(**extra))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2027-01-15T08:00:00.250Z", "level": "WARNING", "logger": "iotpush.dispatch",
        "message": "entry 4 failed", **extra,
    }  # fmt: skip


def test_json_formatter_keeps_the_traceback_in_error() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record()
        made.exc_info = sys.exc_info()
    line = json.loads(JSONFormatter().format(made))
    assert line["error"].startswith("Traceback") and line["error"].endswith("ValueError: boom")
    assert "entry_id" not in line


@contextlib.contextmanager
def bare_logging() -> Iterator[logging.Logger]:
    """The ``iotpush`` logger without handlers or level, and a root logger without handlers, as
    in a process that set up nothing (pytest's own handlers are put back after)."""
    logger = logging.getLogger("iotpush")
    root = logging.getLogger()
    saved = logger.handlers[:], logger.level, root.handlers[:]
    logger.handlers, root.handlers = [], []
    logger.setLevel(logging.NOTSET)
    try:
        yield logger
    finally:
        logger.handlers, root.handlers = saved[0], saved[2]
        logger.setLevel(saved[1])


def test_ensure_handler_adds_one_text_handler_when_lines_would_go_nowhere() -> None:
    with bare_logging() as logger:
        assert ensure_handler() is True
        assert ensure_handler() is False  # once
        (handler,) = logger.handlers
        assert isinstance(handler.formatter, TextFormatter)
        assert logger.level == logging.INFO


def test_ensure_handler_leaves_a_configured_process_alone() -> None:
    with bare_logging() as logger:
        logging.getLogger().handlers = [logging.NullHandler()]
        assert ensure_handler() is False
        assert logger.handlers == []


def test_logs_under_plain_uvicorn_have_time_and_level(tmp_path: Path) -> None:
    """The README's ``create_app`` route, served by uvicorn's own command."""
    port = free_port()
    log = tmp_path / "uvicorn.log"
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "iotpush:create_app", "--port", str(port),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server)
        answer = httpx.post(
            server.url + RECEIVE, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400
    finally:
        process.terminate()
        process.wait(15)
    lines = [line for line in log.read_text().splitlines() if not line.startswith("INFO:")]
    ours = [line for line in lines if TEXT_LINE.match(line)]
    assert any(" WARNING iotpush: refused a push to " in line for line in ours), lines
    assert any(
        " INFO iotpush: left from the last run: 0 undelivered, 0 dead" in line for line in ours
    )
    assert all(TEXT_LINE.match(line) or not line.strip() for line in lines), lines


def test_serve_log_format_json_writes_objects_and_the_startup_summary(tmp_path: Path) -> None:
    port = free_port()
    store = f"sqlite:///{tmp_path / 'j.db'}"
    with serve(
        tmp_path, port, "tests.ledger_receiver:receiver", "--log-format", "json",
        store=store, env={"LEDGER": str(tmp_path / "ledger")}, name="json", log_level="info",
    ) as server:  # fmt: skip
        httpx.post(
            server.url + RECEIVE, content=b"[]", headers={"content-type": "application/json"}
        )
        server.process.terminate()
        server.process.wait(15)
    lines = [line for line in server.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) == len(lines), lines  # every line is one object
    for item in records:
        assert {"time", "level", "logger", "message"} <= set(item)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["time"])
    messages = [item["message"] for item in records if item["logger"] == "iotpush"]
    assert f"store: sqlite:///{tmp_path / 'j.db'} (synchronous=FULL)" in messages
    assert "handlers: every type: record" in messages
    receiving = "receiving on /v1.0.0/messageReceiver, /v1.0.0/messageReceiver/cmd (legacy)"
    assert f"{receiving} and /v5/forwarding (v5)" in messages
    assert "left from the last run: 0 undelivered, 0 dead" in messages
    assert any(m.startswith("refused a push to /v1.0.0/messageReceiver: 400") for m in messages)


def failing() -> object:
    """A receiver whose one handler always fails: a retry, then a dead letter, are logged."""
    from iotpush import Notification, Receiver

    receiver = Receiver()

    @receiver.on()
    def refuse(notification: Notification) -> None:
        raise RuntimeError("refused")

    return receiver


def test_serve_log_format_json_dispatcher_lines_carry_the_entry_fields(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'd.db'}"
    push = EXAMPLES["04-deviceDataChanged"]
    device = json.loads(push)["deviceId"]
    with serve(
        tmp_path, free_port(), "tests.test_logs:failing", "--log-format", "json",
        "--max-attempts", "2", "--backoff", "0.05", store=store, env={}, name="dispatch",
    ) as server:  # fmt: skip
        answer = httpx.post(
            server.url + RECEIVE, content=push, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 20
        while "dead-lettered" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        server.process.terminate()
        server.process.wait(15)
    records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    ours = [item for item in records if item["logger"] == "iotpush.dispatch"]
    assert [item["level"] for item in ours] == ["WARNING", "ERROR"], ours  # a retry, the dead
    for attempt, item in enumerate(ours, 1):
        assert {k: item.get(k) for k in CONTEXT_FIELDS} == {
            "entry_id": 1, "type": "deviceDataChanged", "device": device,
            "handler": "failing.<locals>.refuse", "attempt": attempt,
        }, item  # fmt: skip
