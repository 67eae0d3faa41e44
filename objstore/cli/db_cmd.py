"""``objstore db status`` and ``objstore db upgrade``: where each database's schema stands; upgrading it."""

from __future__ import annotations

import click

from objstore.cli.context import json_option, open_store
from objstore.cli.errors import EXIT_PROBLEMS
from objstore.cli.output import emit_json, print_table

__all__ = ["db"]


@click.group()
def db() -> None:
    """Database schema: status and upgrade."""


@db.command()
@json_option
@click.option("--check", is_flag=True, help="Exit with status 1 when a database needs an upgrade.")
def status(as_json: bool, check: bool) -> None:
    """Each database's schema revision (or "empty"), the newest known (head), and whether it is current.

    Applies no migration (an empty database stays without a schema).
    """
    with open_store(upgrade_schema=False) as store:
        statuses = store.schema_status()
    if as_json:
        emit_json(
            [
                {
                    "database": s.label,
                    "current": s.current,
                    "head": s.head,
                    "up_to_date": s.up_to_date,
                    "state": s.state,
                }
                for s in statuses
            ]
        )
    else:
        advice = {
            "current": "up to date",
            "empty": "empty: run `objstore db upgrade` (or open the store)",
            "older": "older: run `objstore db upgrade`",
            "newer": "newer than this objstore: upgrade objstore",
        }
        rows = [[s.label, s.current or "empty", s.head, advice[s.state]] for s in statuses]
        print_table(["DATABASE", "CURRENT", "HEAD", "STATUS"], rows)
    if check and not all(s.up_to_date for s in statuses):
        raise click.exceptions.Exit(EXIT_PROBLEMS)


@db.command()
@json_option
def upgrade(as_json: bool) -> None:
    """Create or upgrade every database's schema to the newest revision."""
    with open_store(upgrade_schema=False) as store:
        before = store.schema_status()
        after = store.upgrade()
    changes = [
        {"database": new.label, "from": old.current, "to": new.current}
        for old, new in zip(before, after, strict=True)
    ]
    if as_json:
        emit_json(changes)
        return
    for change in changes:
        if change["from"] == change["to"]:
            click.echo(f"{change['database']}: {change['to']} (already up to date)")
        else:
            click.echo(f"{change['database']}: {change['from'] or 'empty'} -> {change['to']}")
