"""``objstore blobs migrate``: copy content between the configured blob stores."""

from __future__ import annotations

import click

from objstore.cli.context import json_option, open_store
from objstore.cli.errors import EXIT_PROBLEMS
from objstore.cli.output import emit_json, human_size

__all__ = ["blobs"]


@click.group()
def blobs() -> None:
    """Blob stores: move content from one to another."""


@blobs.command()
@click.option(
    "--to",
    "target",
    required=True,
    metavar="STORE",
    help="The store to copy into: its name, or its position in [[blobs.stores]] (from 1).",
)
@json_option
def migrate(target: str, as_json: bool) -> None:
    """Copy into STORE every blob the other configured stores hold and it lacks, each copy verified
    against its sha256. Resumable: run it again after an interruption. To retire an old store, list the
    new one first (it takes the writes), migrate to it, check, then remove the old one from the list.

    Exits with status 1 when some blobs could not be copied (they are listed).
    """
    with open_store() as store:
        report = store.migrate_blobs(target)
    if as_json:
        emit_json(
            {
                "copied": report.copied,
                "bytes_copied": report.bytes_copied,
                "already_there": report.already_there,
                "failed": report.failed,
            }
        )
    else:
        click.echo(
            f"copied {report.copied} blob(s), {human_size(report.bytes_copied)}; "
            f"{report.already_there} already in store {target}"
        )
        for failure in report.failed:
            click.echo(f"  not copied: {failure}")
        if report.failed:
            click.echo("run it again once the stores are reachable; `objstore check` lists damaged content")
    if not report.ok:
        raise click.exceptions.Exit(EXIT_PROBLEMS)
