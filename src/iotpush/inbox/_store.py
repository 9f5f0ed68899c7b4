"""The store URL, parsed once: which backend, where, and what that store can do.

``sqlite:///relative.db`` (three slashes: relative to the working directory),
``sqlite:////absolute/path.db`` (four: absolute), or a plain file path; ``postgresql://...``
(or ``postgres://``, with ``?schema=NAME``); ``memory://``. Anything else, and a ``sqlite:`` URL
with one or two slashes or none (``sqlite:/x.db``, ``sqlite:x.db``, ``sqlite://x.db``), is refused
with one line, never taken as a file of that odd name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from ..exceptions import ConfigError

__all__ = ["Mode", "Scheme", "StoreURL"]

Scheme: TypeAlias = Literal["sqlite", "postgres", "memory"]
Mode: TypeAlias = Literal["create", "write", "read"]
"""How a command opens its store: ``create`` it if missing and bring its schema up to date
(``serve``, ``db upgrade``); ``write`` an existing one (``replay``, ``purge``...); ``read`` an
existing one without writing anything (``stats``, ``ls``...: they work on a full disk and on a
read-only filesystem)."""

_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db, postgresql://... or memory://"

# The options each backend takes beyond the `Inbox` ones.
_OPTIONS: dict[Scheme, frozenset[str]] = {
    "sqlite": frozenset(
        {"synchronous", "busy_timeout", "exclusive", "max_batch", "max_pending", "mode"}
    ),
    "postgres": frozenset(
        {"busy_timeout", "max_batch", "pool_size", "max_pending", "db_timeout", "mode"}
    ),
    "memory": frozenset({"mode"}),
}
_INBOX_OPTIONS = frozenset(
    {"dedupe_window", "clock", "outbox", "quarantine_max_rows", "projections", "events"}
)


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A store URL, parsed: its backend, its file (SQLite) or schema (PostgreSQL).

    Build it with `parse`.
    """

    url: str
    """The URL as given."""
    scheme: Scheme
    path: Path | None = None
    """The SQLite file, as the URL names it (relative to the working directory or absolute)."""
    schema: str | None = None
    """The PostgreSQL schema of ``?schema=`` (None: the database's search path)."""

    @classmethod
    def parse(cls, url: str) -> StoreURL:
        """Parse a store URL.

        Raises:
            ConfigError: The URL is malformed or its scheme unknown (one line, with the forms).
        """
        if url.startswith(("postgresql://", "postgres://")):
            from ._postgres_db import parse_url

            return cls(url, "postgres", schema=parse_url(url).schema)
        if url.startswith("memory:"):
            return cls(url, "memory")
        if url.startswith("sqlite:"):
            rest = url.removeprefix("sqlite:")
            # As SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db.
            if not rest.startswith("///") or rest == "///" or rest.endswith("/"):
                raise ConfigError(f"malformed store URL {url!r}: use {_FORMS}")
            return cls(url, "sqlite", path=Path(rest.removeprefix("///")))
        if "://" in url or not url:
            scheme = url.split("://", 1)[0]
            raise ConfigError(f"unsupported store {scheme!r}: use {_FORMS}")
        return cls(url, "sqlite", path=Path(url))

    @property
    def shared(self) -> bool:
        """Whether several server processes can use the store at once (PostgreSQL)."""
        return self.scheme == "postgres"

    @property
    def durable(self) -> bool:
        """Whether the store outlives the process, and so has a schema and migrations."""
        return self.scheme != "memory"

    @property
    def absolute(self) -> Path | None:
        """The SQLite file's absolute path (None for other stores)."""
        return None if self.path is None else Path(os.path.abspath(self.path))

    @property
    def shown(self) -> str:
        """The URL as messages show it: without a password."""
        if self.scheme != "postgres":
            return self.url
        from ._postgres_db import parse_url

        return parse_url(self.url).shown

    @property
    def where(self) -> str:
        """What the log names at start: the file's absolute path, or the URL shown."""
        return str(self.absolute) if self.absolute is not None else self.shown

    def check_options(self, options: dict[str, object]) -> None:
        """Refuse options this store's backend does not take.

        Raises:
            ConfigError: Naming the option and the stores that take it.
        """
        allowed = _INBOX_OPTIONS | _OPTIONS[self.scheme]
        for name in options:
            if name not in allowed:
                takers = [s for s, names in _OPTIONS.items() if name in names]
                which = " and ".join(takers) + " stores" if takers else "no store"
                raise ConfigError(f"{self.scheme} stores do not take {name!r} (only {which})")
