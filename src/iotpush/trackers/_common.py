"""What the trackers share: the connection they need, JSON columns, and query fragments."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ..models import Notification
from ..projections import Cursor, Database

__all__ = [
    "FINISHED_SCHEMA", "Cursor", "Database", "Finished", "History", "Tracker", "dumps",
    "finished_events", "finished_purges", "fold_ranked", "key_cursor", "key_pattern", "limit_sql",
    "loads", "movers_and_latest", "page_sql", "parse_key", "upsert_sql",
]  # fmt: skip

MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Tracker:
    """A tracker module as a `iotpush.projections.Projection`: its name, the notification
    classes it reads, its ``apply`` and its ``RESET`` statements."""

    name: str
    reads: tuple[type[Notification], ...]
    apply_one: Callable[[Database, int, float, Notification], None]
    statements: tuple[str, ...]

    @property
    def handles(self) -> frozenset[str]:
        """The ``notifyType`` values of `reads`."""
        return frozenset(cls.notify_type for cls in self.reads)

    def apply(
        self, db: Database, entry_id: int, received_at: float, notification: Notification
    ) -> None:
        """Apply one entry (see the tracker module's ``apply``)."""
        self.apply_one(db, entry_id, received_at, notification)

    def reset(self, db: Database) -> None:
        """Run the tracker's ``RESET`` statements."""
        for sql in self.statements:
            db.execute(sql, ())


@dataclass(frozen=True, slots=True)
class History:
    """A tracker's history table as retention purges it: its rows received before a time go,
    in entry-id order, except those ``keep`` holds for (the events that set a current state).

    ``keep`` is an SQL condition on a row of ``table``, which it names by the table's name.
    """

    table: str
    keep: str

    def prune(self, db: Database, after: int, before: float, limit: int) -> tuple[int, int, bool]:
        """Delete the rows after entry ``after`` received before ``before`` that are not kept,
        looking at about ``limit`` rows; in the caller's transaction.

        Stops at the first row received since ``before`` (entry ids follow receipt closely but
        not exactly: the next call starts there). Returns how many rows went, the last entry id
        looked at (the next call's ``after``), and whether none older are left to look at.
        """
        rows = db.execute(
            f"SELECT entry_id, received_at FROM {self.table}"  # noqa: S608 - a constant name
            " WHERE entry_id > ? ORDER BY entry_id LIMIT ?",
            (after, limit),
        ).fetchall()
        end, done = after, len(rows) < limit
        for entry_id, received_at in rows:
            if received_at >= before:
                done = True
                break
            end = entry_id
        if end == after:
            return 0, after, done
        deleted = db.execute(
            f"DELETE FROM {self.table} WHERE entry_id > ? AND entry_id <= ?"  # noqa: S608
            f" AND received_at < ? AND NOT ({self.keep})",
            (after, end, before),
        ).rowcount
        return int(deleted), end, done


FINISHED_SCHEMA = """
CREATE TABLE IF NOT EXISTS finished_purges (
    kind TEXT PRIMARY KEY,
    records BIGINT NOT NULL,
    last_before DOUBLE PRECISION NOT NULL
);
"""
"""How many records of each kind `Finished.prune` deleted, and the latest bound it used."""

_COUNT_FINISHED = (
    "INSERT INTO finished_purges (kind, records, last_before) VALUES (?, ?, ?)"
    " ON CONFLICT (kind) DO UPDATE SET records = finished_purges.records + excluded.records,"
    " last_before = CASE WHEN excluded.last_before > finished_purges.last_before"
    " THEN excluded.last_before ELSE finished_purges.last_before END"
)


@dataclass(frozen=True, slots=True)
class Finished:
    """A tracker's finished records as finished-retention deletes them: each record in a final
    state that nothing was heard about since a time goes, with every row about it.

    ``find`` selects the keys of such records (its every ``?`` is that time), through an index,
    oldest first; `prune` appends the ``LIMIT``. ``gone`` deletes one by its key if it still is
    one (its ``?`` are the key's parts, then the time, as often as it needs it): a push about
    it that another transaction committed meanwhile keeps it. ``rows`` then delete the rest of
    it by key (its history, an expectation...). Records still open are never found.
    """

    kind: str
    """What they are (``commands``...): a `iotpush.events.PurgeRound` counts them as
    ``finished_<kind>``."""
    find: str
    gone: str
    rows: tuple[str, ...]

    def prune(self, db: Database, before: float, limit: int) -> tuple[int, bool]:
        """Delete about ``limit`` finished records last heard of before ``before``, in the
        caller's transaction, and count them in ``finished_purges``; return how many went and
        whether none are left."""
        params = [before] * self.find.count("?")
        found = db.execute(self.find + " LIMIT ?", (*params, limit)).fetchall()
        deleted = 0
        for key in dict.fromkeys(tuple(row) for row in found):
            again = [before] * (self.gone.count("?") - len(key))
            if db.execute(self.gone, (*key, *again)).rowcount:
                for sql in self.rows:
                    db.execute(sql, key)
                deleted += 1
        if deleted:
            db.execute(_COUNT_FINISHED, (self.kind, deleted, before))
        return deleted, len(found) < limit or not deleted


def finished_purges(db: Database) -> dict[str, tuple[int, float]]:
    """Per kind, how many finished records finished-retention deleted, and the latest bound
    (those went because nothing was heard about them since before it)."""
    rows = db.execute("SELECT kind, records, last_before FROM finished_purges", ()).fetchall()
    return {kind: (int(records), float(before)) for kind, records, before in rows}


def finished_events(kind: str, table: str, key: str, final: str) -> Finished:
    """`Finished` of a record whose history is the record (v5 messages, tasks): each ``key`` of
    ``table`` with a push matching ``final`` before the bound and no push since, all its rows."""
    quiet = (
        f"NOT EXISTS (SELECT 1 FROM {table} AS n"  # noqa: S608 - constants
        f" WHERE n.{key} = {table}.{key} AND n.received_at >= ?)"
    )
    return Finished(
        kind,
        f"SELECT {key} FROM {table} WHERE {final} AND received_at < ? AND {quiet}"  # noqa: S608
        " ORDER BY received_at",
        f"DELETE FROM {table} WHERE {key} = ? AND {quiet}",  # noqa: S608 - constants
        (),
    )


def movers_and_latest(table: str, key: str, ranks: Mapping[str, int]) -> str:
    """`History.keep` of a history folded by `fold_ranked` when read: each push that moved its
    record's status (none before it had that rank or more), and each record's latest push."""

    def rank(alias: str) -> str:
        cases = " ".join(f"WHEN '{status}' THEN {n}" for status, n in ranks.items())
        return f"(CASE upper({alias}.status) {cases} END)"

    mine = rank(table)
    return (
        f"({mine} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {table} AS o"  # noqa: S608
        f" WHERE o.{key} = {table}.{key} AND o.entry_id < {table}.entry_id"
        f" AND {rank('o')} >= {mine}))"
        f" OR NOT EXISTS (SELECT 1 FROM {table} AS n"
        f" WHERE n.{key} = {table}.{key} AND n.entry_id > {table}.entry_id)"
    )


_encode = msgspec.json.encode
_decode = msgspec.json.decode


def dumps(value: Any) -> str:
    """Encode a JSON column, keys sorted: the same value always gives the same text."""
    return _encode(value, order="sorted").decode()


def loads(text: str | None) -> Any:
    """Decode a JSON column; ``NULL`` is ``None``."""
    return None if text is None else _decode(text)


# A page cursor holds a record's key: each part as the hex of its UTF-8, joined by commas, so
# only characters a URL or a shell passes as they are.
_HEX_PART = "([0-9a-f]{2})*"


def key_pattern(parts: int) -> str:
    """A regular expression matching a `key_cursor` of ``parts`` parts (unanchored)."""
    return ",".join([_HEX_PART] * parts)


def key_cursor(key: Iterable[str]) -> str:
    """A record's key as cursor text (read back by `parse_key`)."""
    return ",".join(part.encode().hex() for part in key)


def parse_key(text: str, parts: int) -> list[str] | None:
    """The key of a `key_cursor` of ``parts`` parts; ``None`` if ``text`` is not one."""
    if re.fullmatch(key_pattern(parts), text) is None:
        return None
    return [bytes.fromhex(part).decode("utf-8", "replace") for part in text.split(",")]


def limit_sql(limit: int | None, params: list[Any]) -> str:
    """A ``LIMIT ?`` clause for ``limit`` (appended to ``params``), or none for ``None``.

    Raises:
        ValueError: ``limit`` is not between 1 and 1000.
    """
    if limit is None:
        return ""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    params.append(limit)
    return " LIMIT ?"


# The two places SQL is put together from fragments. Every fragment is a constant of a tracker
# module (table, column and clause text); values always travel as parameters.


def upsert_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """``INSERT`` a whole row, replacing its non-key columns when the key exists."""
    names, marks = ", ".join(columns), ", ".join("?" * len(columns))
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) {conflict}"  # noqa: S608


def page_sql(
    columns: str,
    table: str,
    alias: str,
    clauses: Sequence[str],
    order: Sequence[str],
    limit: str,
    join: str,
    then: str,
) -> str:
    """Select ``columns`` from a page of ``table`` (as ``alias``) joined to its detail rows.

    The page is the rows matching every clause, in ``order``, cut by ``limit`` (a `limit_sql`
    clause); the result keeps that order, then ``then`` orders the joined rows of each.
    """
    where = " AND ".join(clauses) or "1 = 1"
    outer = ", ".join(f"{alias}.{column}" for column in order)
    page = f"SELECT * FROM {table} WHERE {where} ORDER BY {', '.join(order)}{limit}"  # noqa: S608
    return f"SELECT {columns} FROM ({page}) AS {alias} {join} ORDER BY {outer}, {then}"  # noqa: S608


def select_pages(
    db: Database,
    columns: str,
    table: str,
    alias: str,
    clauses: Sequence[str],
    params: Sequence[Any],
    order: Sequence[str],
    limit: int | None,
    join: str,
    key: Callable[[Any], Any],
) -> list[list[Any]]:
    """Run a `page_sql` query; return the joined rows grouped by record (``key`` of a row)."""
    args = list(params)
    sql = page_sql(
        columns, table, alias, clauses, order, limit_sql(limit, args), join, "e.entry_id"
    )
    rows = db.execute(sql, args).fetchall()
    return [list(group) for _, group in itertools.groupby(rows, key)]


def fold_ranked(
    ranks: Mapping[str, int], final: int, events: Iterable[tuple[int, str | None]]
) -> tuple[str | None, int | None, set[int]]:
    """Fold status pushes ``(entry_id, status)``, in entry-id order, into a current status.

    A status of higher rank advances (skipping ranks is fine); one of rank ``final`` never
    changes; a lower or equal rank, or a status not in ``ranks``, moves nothing. Returns the
    status, the entry that set it, and the entries that moved it.
    """
    status: str | None = None
    setter: int | None = None
    moved: set[int] = set()
    for entry_id, incoming in events:
        rank = None if incoming is None else ranks.get(incoming)
        if rank is None:
            continue
        if status is not None and (ranks[status] >= final or rank <= ranks[status]):
            continue
        status, setter = incoming, entry_id
        moved.add(entry_id)
    return status, setter, moved
