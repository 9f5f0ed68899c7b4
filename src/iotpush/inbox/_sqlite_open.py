"""Opening the SQLite file: created or not, written or only read, and what went wrong, in words.

Only a server and ``db upgrade`` create a store (``mode="create"``); every other command needs
it to exist, so that a mistyped path is an error rather than a new, empty store. A read-only
open (``mode="read"``) writes nothing, not even the schema version, so that inspecting a store
works on a full disk and on a read-only filesystem:

- it opens ``file:PATH?mode=ro``, which reads a WAL database through its ``-wal`` and ``-shm``
  files when they exist (a server is running, or one died);
- when that fails and there is no write-ahead log to read (the last connection checkpointed it
  and removed it), it opens with ``immutable=1``: nothing but the main file to read, and no
  ``-shm`` to create where no file can be created;
- a ``-wal`` that holds commits but cannot be read is an error, never a silently stale answer.

Failures become one line naming the store and the cause. A server that finds the disk full
(`transient`) starts all the same and answers 503 until the store opens (see `SQLiteInbox`).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from ..exceptions import ConfigError, InboxUnavailable, IotpushError
from . import _migrations
from ._store import Mode

__all__ = [
    "describe", "gives_back", "prepare", "read_only", "read_uri", "size", "start", "take_lock",
    "transient", "vacuum",
]  # fmt: skip

_TRANSIENT = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}


def _abs(path: Path) -> Path:
    """``path`` made absolute, ``..`` removed, symbolic links kept: what messages name."""
    return Path(os.path.abspath(path))


def _missing(path: Path) -> ConfigError:
    return ConfigError(
        f"there is no store at {_abs(path)} (`iotpush serve` or `iotpush db upgrade` creates one)"
    )


def prepare(path: Path, mode: Mode) -> None:
    """Make sure the file can be opened as ``mode`` asks: create its folder, or find it.

    Raises:
        ConfigError: The store is missing (not ``create``), or its folder cannot be made.
    """
    if mode != "create":
        if not path.is_file():
            raise _missing(path)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise ConfigError(
            f"cannot create the store {_abs(path)}: {exc.strerror or exc}{where}"
        ) from None


def start(conn: sqlite3.Connection) -> None:
    """Set up a writer connection: WAL, and for a new file incremental vacuum.

    ``auto_vacuum`` can only be chosen before the file's first table (or by a full ``VACUUM``,
    see `vacuum`): on an existing file the pragma changes nothing.
    """
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")


def gives_back(conn: sqlite3.Connection) -> bool:
    """Whether the file gives freed pages back to the filesystem (``auto_vacuum`` incremental)."""
    (mode,) = conn.execute("PRAGMA auto_vacuum").fetchone()
    return int(mode) == 2


def vacuum(path: Path) -> tuple[int, int]:
    """Rewrite the store at ``path`` with incremental vacuum (`gives_back` from then on); return
    its size in bytes (with its write-ahead log) before and after.

    Needs the store to itself (no server: its lock file says so) and free space for a copy.

    Raises:
        ConfigError: No store there, or a server uses it.
        IotpushError: SQLite failed (the message names the store and the cause).
    """
    prepare(path, "write")
    lock = take_lock(path)
    try:
        before = size(path)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise describe(path, exc) from None
    finally:
        os.close(lock)
    return before, size(path)


def size(path: Path) -> int:
    """Bytes the store takes: its file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def take_lock(path: Path) -> int:
    """Lock ``PATH.lock`` for this server; return its descriptor.

    Raises:
        ConfigError: Another server holds it, or it cannot be created (read-only filesystem...).
    """
    try:
        fd = os.open(f"{_abs(path)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot open the store {_abs(path)}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(f"another iotpush server is using {_abs(path)}") from None
    return fd


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass by itself: the disk is full, or the I/O failed."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _TRANSIENT


def describe(path: Path, exc: sqlite3.Error) -> IotpushError:
    """The one-line error for a failure to open ``path``."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return ConfigError(f"{_abs(path)} is not an iotpush store: {exc}")
    if code == sqlite3.SQLITE_CANTOPEN and path.is_dir():
        return ConfigError(f"the store {_abs(path)} is a directory, not a file")
    return InboxUnavailable(f"cannot open the store {_abs(path)}: {exc}")


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    current = _migrations.sqlite_version(conn)
    if current == 0:
        raise ConfigError(f"{_abs(path)} is not an iotpush store: it has no iotpush tables")
    if current > _migrations.LATEST:
        _migrations.migrate_sqlite(conn, str(path))  # raises: newer than the code
    if current < _migrations.LATEST:
        raise ConfigError(
            f"{_abs(path)} has schema version {current} of {_migrations.LATEST}:"
            f" run `iotpush db upgrade --store sqlite:///{_abs(path)}`"
        )


def read_only(path: Path) -> tuple[str, sqlite3.Connection]:
    """Open ``path`` read-only; return the URI that did it and the connection.

    Raises:
        ConfigError: The store is missing or not a database.
        InboxUnavailable: It cannot be read.
    """
    if not path.is_file():
        raise _missing(path)
    uri = f"file:{quote(str(_abs(path)))}?mode=ro"
    try:
        return uri, _first_read(uri)
    except sqlite3.OperationalError as exc:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:  # commits to read that only it holds
            raise InboxUnavailable(
                f"cannot read the store {_abs(path)}: {exc} (its write-ahead log {wal.name}"
                " holds commits: open the store once where it can be written)"
            ) from None
        first = exc
    except sqlite3.DatabaseError as exc:
        raise describe(path, exc) from None
    uri += "&immutable=1"  # nothing but the main file to read: no -shm to create
    try:
        return uri, _first_read(uri)
    except sqlite3.Error:
        raise describe(path, first) from None


def _first_read(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def read_uri(path: Path) -> str:
    """The URI that opens ``path`` read-only, after checking that it reads as a current store.

    Raises:
        ConfigError: The store is missing, not an iotpush store, or of another version.
        InboxUnavailable: It cannot be read.
    """
    uri, conn = read_only(path)
    try:
        _check_version(conn, path)
    finally:
        conn.close()
    return uri
