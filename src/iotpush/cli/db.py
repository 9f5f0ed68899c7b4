"""``iotpush db``: the store's schema version and its migrations."""

from __future__ import annotations

import sys

import click

from ._shared import library_errors, store_option


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
