"""``iotpush db``: the store's schema version and its migrations."""

from __future__ import annotations

import sys

import click

from ._shared import confirm, dry_run_option, library_errors, store_option, yes_option


@click.group()
def db() -> None:
    """The store's schema: its version, and upgrading it (PostgreSQL needs this first)."""


@db.command("upgrade")
@store_option
def db_upgrade(store: str) -> None:
    """Create the schema, or apply the migrations it lacks (safe to run again)."""
    from ..inbox import _migrations

    with library_errors():
        applied = _migrations.upgrade(store)
        latest = _migrations.status(store).latest
    for step in applied:
        click.echo(f"applied {step.version}: {step.description}")
    click.echo(f"{_migrations.shown(store)} is at schema version {latest}")


@db.command("status")
@store_option
def db_status(store: str) -> None:
    """Show the schema version and the migrations not applied yet; exit 1 when some are."""
    from ..inbox import _migrations

    with library_errors():
        status = _migrations.status(store)
    click.echo(f"schema version {status.current} of {status.latest} ({status.backend})")
    for step in status.pending:
        click.echo(f"pending {step.version}: {step.description}")
    if status.pending:
        sys.exit(1)


@db.command("vacuum")
@store_option
@yes_option
@dry_run_option
def db_vacuum(store: str, yes: bool, dry_run: bool) -> None:
    """Rewrite a SQLite store so that purged space goes back to the filesystem (server stopped).

    Stores made before iotpush chose incremental vacuum reuse what is purged but never shrink;
    this rewrites the file once (a full VACUUM: it needs as much free disk as the file, and
    minutes on a big one) and from then on each retention round gives the freed pages back.
    """
    from ..exceptions import ConfigError
    from ..inbox import StoreURL, _sqlite_open

    with library_errors():
        url = StoreURL.parse(store)
        if url.path is None:
            raise ConfigError(f"db vacuum is for SQLite stores, not {url.scheme}")
        path = url.path
        _sqlite_open.prepare(path, "write")
        _, conn = _sqlite_open.read_only(path)
        try:
            done = _sqlite_open.gives_back(conn)
        finally:
            conn.close()
    if done:
        click.echo(f"{path} gives space back already (incremental vacuum): nothing to do")
        return
    megabytes = _sqlite_open.size(path) / 1e6
    lines = [
        f"it takes as much free disk again ({megabytes:.1f} MB) while it runs",
        "no server may use the store meanwhile (the command refuses if one does)",
    ]
    if confirm("rewrite", f"{path} ({megabytes:.1f} MB) with incremental vacuum", 1, lines,
               yes=yes, dry_run=dry_run):  # fmt: skip
        with library_errors():
            before, after = _sqlite_open.vacuum(path)
        click.echo(f"rewrote {path}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
