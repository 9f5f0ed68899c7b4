"""The services some configs need beside the server: a PostgreSQL schema, a JetStream stream.

Each run gets its own (named after the bench process and the run) and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BenchError", "Store", "Stream", "iotpush_command"]


class BenchError(Exception):
    """Something the benchmark cannot go on without; the message is one sentence for a person."""


def iotpush_command() -> str:
    """The ``iotpush`` console script beside this Python, or on PATH.

    Raises:
        BenchError: It is not installed.
    """
    beside = Path(sys.executable).parent / "iotpush"
    found = str(beside) if beside.exists() else shutil.which("iotpush")
    if not found:
        raise BenchError(
            f"the iotpush command is not installed (looked for {beside} and on PATH); "
            "run `make install` (pip install -e .) first, or leave iotpush out with "
            "--configs baseline,legacy"
        )
    return found


@dataclass
class Store:
    """A PostgreSQL schema of its own for one run, migrated by ``iotpush db upgrade``."""

    server: str
    schema: str

    @property
    def url(self) -> str:
        """The store URL ``iotpush serve --store`` takes."""
        return f"{self.server}{'&' if '?' in self.server else '?'}schema={self.schema}"

    @classmethod
    def create(cls, server: str | None, workdir: Path) -> Store:
        """Create the schema and its tables.

        Raises:
            BenchError: No PostgreSQL URL, or it does not answer, or the upgrade fails.
        """
        if not server:
            raise BenchError("the PostgreSQL configs need --postgres URL")
        store = cls(server, f"iotpush_bench_{os.getpid()}_{workdir.name}".replace("-", "_"))
        try:
            store._execute(f'CREATE SCHEMA "{store.schema}"')
        except Exception as exc:  # psycopg missing, or the server does not answer
            raise BenchError(f"cannot use PostgreSQL at {server}: {exc}") from exc
        done = subprocess.run(
            [iotpush_command(), "db", "upgrade", "--store", store.url],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            store.drop()
            raise BenchError(f"iotpush db upgrade failed: {done.stderr.strip() or done.stdout}")
        return store

    def _execute(self, sql: str) -> Any:
        import psycopg  # the postgres extra; only these configs need it

        with psycopg.connect(self.server, autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            row = cursor.fetchone() if cursor.description else None
            return None if row is None else row[0]

    def size(self) -> int:
        """Bytes of every table and index of the schema."""
        sql = (
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            f" WHERE n.nspname = '{self.schema}' AND c.relkind = 'r'"  # our own schema name
        )
        try:
            return int(self._execute(sql))
        except Exception:  # a size we cannot read is not worth failing a run
            return 0

    def backends(self) -> list[int]:
        """The pids of the database server processes serving iotpush's connections to this
        schema (their ``application_name`` names it); empty if they cannot be read."""
        import psycopg

        sql = "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s"
        try:
            with psycopg.connect(self.server, autocommit=True, connect_timeout=5) as conn:
                rows = conn.execute(sql, (f"iotpush % {self.schema}",)).fetchall()
        except Exception:  # no figure rather than a failed run
            return []
        return [int(pid) for (pid,) in rows]

    def drop(self) -> None:
        """Drop the schema and everything in it."""
        # Left behind at worst: its name says which bench made it.
        with contextlib.suppress(Exception):
            self._execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


@dataclass
class Stream:
    """A JetStream stream and subject prefix of their own for one run of ``iotpush-nats``."""

    server: str
    name: str

    @property
    def sink(self) -> str:
        """The ``iotpush serve --sink`` URL that publishes to this stream."""
        return f"{self.server}?stream={self.name}&prefix={self.name.lower()}"

    @classmethod
    def create(cls, server: str | None, workdir: Path) -> Stream:
        """Pick the names and check that NATS answers (the server creates the stream).

        Raises:
            BenchError: No NATS URL, nats-py missing, or NATS does not answer.
        """
        if not server:
            raise BenchError("the iotpush-nats config needs --nats URL")
        stream = cls(server, f"BENCH_{os.getpid()}_{workdir.name}".replace("-", "_").upper())
        try:
            stream._run(lambda js: asyncio.sleep(0))
        except Exception as exc:  # nats-py missing, or the server does not answer
            raise BenchError(f"cannot use NATS at {server}: {exc}") from exc
        return stream

    def _run(self, action: Any) -> Any:
        import nats  # the nats extra; only this config needs it

        async def main() -> Any:
            nc = await nats.connect(self.server, connect_timeout=5, max_reconnect_attempts=0)
            try:
                return await action(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(main())

    def messages(self) -> int | None:
        """Messages in the stream now (None if it cannot be read)."""

        async def count(js: Any) -> int:
            return int((await js.stream_info(self.name)).state.messages)

        try:
            return int(self._run(count))
        except Exception:  # no stream yet, or NATS went away: no figure, not a failed run
            return None

    def delete(self) -> None:
        """Delete the stream and its messages."""
        with contextlib.suppress(Exception):  # left behind at worst: its name says whose it is
            self._run(lambda js: js.delete_stream(self.name))
