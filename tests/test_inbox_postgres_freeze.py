"""A frozen PostgreSQL (its processes stopped): pushes are answered 503 within ``--db-timeout``,
and the server recovers by itself when the database does.

The test runs a private cluster of its own (``initdb`` into a temporary directory, its own port),
never the machine's shared server: freezing that one would stall every other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests._servers import JSON, free_port, ledger_lines, post_all, pushes, serve_ledger
from tests.conftest import service_missing, wait_until


@dataclass(frozen=True)
class Cluster:
    """A private PostgreSQL cluster: its URL and data directory."""

    url: str
    data: Path

    def pids(self) -> list[int]:
        """The postmaster and every process it started."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
                ppid = int(stat.read_text().rpartition(")")[2].split()[1])
                if ppid == postmaster:
                    children.append(int(stat.parent.name))
        return [postmaster, *children]

    def signal(self, signum: int) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def _binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        service_missing("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return found[-1].parent


@pytest.fixture
def private_postgres() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test alone, on a free loopback port; removed after."""
    bin = _binaries()
    base = Path(tempfile.mkdtemp(prefix="iotpush-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as its own user
        owner = pwd.getpwnam("postgres")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def pg(*command: str) -> None:
        subprocess.run([*run_as, *command], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "iotpush", "--no-sync")
        settings = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
        log = str(base / "server.log")
        pg(str(bin / "pg_ctl"), "-D", str(data), "-o", settings, "-l", log, "-w", "start")
        cluster = Cluster(f"postgresql://iotpush@127.0.0.1:{port}/postgres", data)
        try:
            yield cluster
        finally:
            cluster.signal(signal.SIGCONT)
            pg(str(bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_postgres_frozen_pushes_get_503_within_the_bound_then_recover(
    private_postgres: Cluster, tmp_path: Path
) -> None:
    from iotpush.inbox import _migrations

    _migrations.upgrade(private_postgres.url)
    ledger = tmp_path / "ledger"
    before, during = pushes(5, devices=5), pushes(10, devices=5)[5:]
    with serve_ledger(
        tmp_path, free_port(), "--db-timeout", "1", store=private_postgres.url, ledger=ledger,
        log_level="info",
    ) as server:  # fmt: skip
        ok, _ = asyncio.run(post_all(server.url, before))
        assert len(ok) == len(before)
        wait_until(lambda: len(ledger_lines(ledger, "done")) == len(before), 30, "deliveries")
        private_postgres.signal(signal.SIGSTOP)
        try:
            # A client that waits far longer than the bound: an answer that waited for the
            # database would come only after the freeze, which lasts until the test ends it.
            with httpx.Client(base_url=server.url, timeout=60) as client:
                answers = [client.post(p.path, content=p.body, headers=JSON) for p in during]
        finally:
            private_postgres.signal(signal.SIGCONT)
        assert [(a.status_code, a.headers.get("retry-after")) for a in answers] == [
            (503, "5")
        ] * len(during)
        left = list(during)

        def resent() -> bool:  # as the platform does: until each is acknowledged
            _, refused = asyncio.run(post_all(server.url, left))
            left[:] = refused
            return not left

        wait_until(resent, 60, "pushes acknowledged after the freeze")
        keys = {p.key for p in before + during}
        wait_until(lambda: keys <= set(ledger_lines(ledger, "done")), 60, "every delivery")
        output = server.output()
    assert "no answer within 1.0 s" in output
    assert "answers again" in output
