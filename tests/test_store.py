"""The store URL and how commands open the store: created by ``serve`` and ``db upgrade`` only,
read-only for the commands that look, one line for every failure to open, and a server that
starts on a full disk and recovers.

The full and read-only filesystems are a small tmpfs this test mounts, so those tests run as
root (as CI does) and are skipped with the reason elsewhere. Every command runs as a real
process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iotpush import decode
from iotpush.exceptions import ConfigError, InboxUnavailable
from iotpush.inbox import Incoming, StoreURL, open_inbox
from iotpush.server import open_inbox as open_with_trackers
from tests._servers import ROOT, free_port, serve
from tests.conftest import EXAMPLES, RECEIVE, run

PUSH = EXAMPLES["04-deviceDataChanged"]
JSON = {"content-type": "application/json"}


def iotpush(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the ``iotpush`` command; its output and exit status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "iotpush.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed (fails the test on a traceback or more)."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# the URL ------------------------------------------------------------------------------------


def test_store_url_sqlite_three_slashes_relative_four_absolute() -> None:
    relative, absolute = StoreURL.parse("sqlite:///data/x.db"), StoreURL.parse("sqlite:////x.db")
    assert relative.path == Path("data/x.db") and relative.absolute == Path.cwd() / "data/x.db"
    assert absolute.path == Path("/x.db")
    assert StoreURL.parse("plain.db").path == Path("plain.db")
    pg = StoreURL.parse("postgresql://u:secret@db/iot?schema=s1")
    assert (pg.scheme, pg.schema, pg.shared, pg.shown) == (
        "postgres", "s1", True, "postgresql://u@db/iot?schema=s1",
    )  # fmt: skip
    assert (relative.shared, StoreURL.parse("memory://").durable) == (False, False)


@pytest.mark.parametrize("url", ["sqlite:/x.db", "sqlite:x.db", "sqlite://x.db", "sqlite:///"])
def test_cli_malformed_sqlite_url_is_refused_with_one_line_and_creates_nothing(
    tmp_path: Path, url: str
) -> None:
    line = one_line(iotpush("inbox", "stats", "--store", url, cwd=tmp_path))
    assert line.startswith(f"Error: malformed store URL {url!r}: use sqlite:///"), line
    assert "sqlite:////absolute/path.db" in line
    assert list(tmp_path.iterdir()) == []


def test_open_inbox_postgres_refuses_sqlite_options() -> None:
    with pytest.raises(ConfigError, match="postgres stores do not take 'synchronous'"):
        open_inbox("postgresql://127.0.0.1/test", synchronous="FULL")
    with pytest.raises(ConfigError, match="'exclusive' \\(only sqlite stores\\)"):
        open_inbox("postgresql://127.0.0.1/test", exclusive=True)


# which commands may create a store ----------------------------------------------------------

COMMANDS = [
    ("inbox", "stats"), ("inbox", "ls"), ("inbox", "show", "1"), ("quarantine", "ls"),
    ("quarantine", "show", "1"), ("commands", "ls"), ("devices", "ls"), ("devices", "show", "d"),
    ("inbox", "replay"), ("inbox", "purge", "--before", "1d"), ("trackers", "rebuild"),
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_cli_command_on_a_missing_store_exits_naming_the_path_and_creates_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    line = one_line(iotpush(*command, "--store", "sqlite:///typo/typo.db", cwd=tmp_path))
    assert f"there is no store at {tmp_path / 'typo' / 'typo.db'}" in line
    assert list(tmp_path.iterdir()) == []


def test_cli_db_upgrade_creates_the_store_and_then_commands_read_it(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'new' / 'iotpush.db'}"
    assert iotpush("db", "upgrade", "--store", store).returncode == 0
    done = iotpush("inbox", "stats", "--store", store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("entries: 0")


# start-up failures --------------------------------------------------------------------------


def serve_fails(store: str, cwd: Path = ROOT) -> str:
    """Start ``iotpush serve`` on ``store``; the one line it exits with."""
    return one_line(iotpush("serve", "--store", store, "--port", str(free_port()), cwd=cwd))


def test_serve_parent_path_is_a_file_exits_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    line = serve_fails(f"sqlite:///{tmp_path / 'file' / 'iotpush.db'}")
    assert f"cannot create the store {tmp_path / 'file' / 'iotpush.db'}" in line


def test_serve_file_that_is_not_a_database_exits_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_bytes(b"these are my notes, not a database" * 100)
    line = serve_fails(f"sqlite:///{tmp_path / 'notes.db'}")
    assert f"{tmp_path / 'notes.db'} is not an iotpush store: file is not a database" in line


def test_serve_store_locked_by_another_server_exits_with_one_line(tmp_path: Path) -> None:
    store = tmp_path / "iotpush.db"
    with serve(tmp_path, free_port(), "tests.test_store:quiet", store=f"sqlite:///{store}",
               env={}, name="first"):  # fmt: skip
        line = serve_fails(f"sqlite:///{store}")
    assert line == f"Error: another iotpush server is using {store}"


def quiet() -> object:
    """A receiver for the servers of these tests."""
    from iotpush import Receiver

    return Receiver()


def test_serve_logs_the_stores_absolute_path(tmp_path: Path) -> None:
    relative = os.path.relpath(tmp_path / "rel.db", ROOT)  # the server runs in ROOT
    with serve(tmp_path, free_port(), "tests.test_store:quiet", store=f"sqlite:///{relative}",
               env={}, name="server", log_level="info") as server:  # fmt: skip
        log = server.output()
    assert f"the inbox is {tmp_path / 'rel.db'}" in log


# full and read-only filesystems -------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (needs root), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a full or read-only disk needs root (CI runs as root)")
    where.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount(where: Path, how: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{how}", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; return it (delete it to free the space)."""
    filler = disk / "filler"
    # Unbuffered: a buffered file would flush its last partial chunk on close and raise there,
    # depending on how many bytes the store happened to leave free.
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def kept(store: str, count: int) -> None:
    """Put ``count`` pushes into ``store`` (a server's work, done in process), then close it."""

    async def fill_store() -> None:
        async with open_with_trackers(store) as inbox:
            for n in range(count):
                body = PUSH.replace(b"20151212T121212Z", f"20151212T1212{n:02}Z".encode())
                item = Incoming.from_notification(
                    decode(body), body=body, path=RECEIVE, headers={}, received_at=time.time()
                )
                await inbox.append(item)

    run(fill_store())


READING = [
    (("inbox", "stats"), "entries: 3"),
    (("inbox", "ls"), "deviceDataChanged"),
    (("devices", "ls"), "3f1e9a52-7c41-4b8e-9d2a-61f0c8b5e7a4"),
    (("db", "status"), "schema version"),
]


def test_cli_read_commands_on_a_read_only_filesystem_work(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        store = f"sqlite:///{disk / 'iotpush.db'}"
        kept(store, 3)
        assert sorted(p.name for p in disk.iterdir()) == ["iotpush.db"]  # checkpointed on close
        remount(disk, "ro")
        try:
            for command, shown in READING:
                done = iotpush(*command, "--store", store)
                assert done.returncode == 0, (command, done.stderr)
                assert shown in done.stdout, (command, done.stdout)
            line = serve_fails(store)
            assert f"cannot open the store {disk / 'iotpush.db'}: Read-only file system" in line
            line = one_line(iotpush("inbox", "replay", "--store", store))
            assert str(disk / "iotpush.db") in line
        finally:
            remount(disk, "rw")


def test_cli_read_commands_on_a_full_disk_work(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        store = f"sqlite:///{disk / 'iotpush.db'}"
        kept(store, 3)
        filler = fill(disk)
        try:
            for command, shown in READING:
                done = iotpush(*command, "--store", store)
                assert done.returncode == 0, (command, done.stderr)
                assert shown in done.stdout, (command, done.stdout)
        finally:
            filler.unlink()


def test_serve_on_a_full_disk_starts_answers_503_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "8m") as disk:
        store = f"sqlite:///{disk / 'iotpush.db'}"
        kept(store, 1)
        filler = fill(disk)
        with serve(tmp_path, free_port(), "tests.test_store:quiet", store=store, env={},
                   name="full") as server:  # fmt: skip
            answer = httpx.post(server.url + RECEIVE, content=PUSH, headers=JSON, timeout=30)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"]
            filler.unlink()
            deadline = time.monotonic() + 30
            while answer.status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
                answer = httpx.post(server.url + RECEIVE, content=PUSH, headers=JSON, timeout=30)
            assert answer.status_code == 200, server.output()


def test_serve_when_the_disk_fills_is_not_ready_until_space_returns(tmp_path: Path) -> None:
    """The readiness check writes a row: an empty transaction would commit on a full disk."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        store = f"sqlite:///{disk / 'iotpush.db'}"
        with serve(tmp_path, free_port(), "tests.test_store:quiet", store=store, env={},
                   name="full") as server:  # fmt: skip
            ready = httpx.get(server.url + "/health/ready", timeout=30)
            assert ready.status_code == 200, ready.text
            filler = fill(disk)
            ready = httpx.get(server.url + "/health/ready", timeout=30)
            assert ready.status_code == 503, ready.text
            check = ready.json()["checks"]["store"]
            assert check["ok"] is False
            assert "full" in check["reason"], check
            filler.unlink()
            deadline = time.monotonic() + 30
            while ready.status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
                ready = httpx.get(server.url + "/health/ready", timeout=30)
            assert ready.status_code == 200, (ready.text, server.output())


def test_postgres_read_only_inbox_reads_and_refuses_writes(postgres_store: str) -> None:
    item = Incoming.from_notification(
        decode(PUSH), body=PUSH, path=RECEIVE, headers={}, received_at=time.time()
    )

    async def scenario() -> int:
        async with open_with_trackers(postgres_store, mode="read") as inbox:
            stats = await inbox.stats()
            with pytest.raises(InboxUnavailable, match="is open read-only"):
                await inbox.append(item)
            return stats.total

    assert run(scenario()) == 0
    done = iotpush("inbox", "stats", "--store", postgres_store)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("entries: 0")
