"""``objstore check``, ``objstore gc`` and ``objstore prune``: consistency checks and retention."""

from __future__ import annotations

from typing import Any

import click

from objstore.cli.context import json_option, open_store
from objstore.cli.errors import EXIT_PROBLEMS
from objstore.cli.output import emit_json, human_size

__all__ = ["check", "gc", "prune"]

_GRACE_SETTING = "blobs.gc_grace_period (argument to Settings.load)"


@click.command()
@click.option("--fix", is_flag=True, help="Delete objects with missing or corrupt content, and orphan blobs.")
@click.option("--verify", is_flag=True, help="Also read every value and compare it with its sha256 (slow).")
@json_option
def check(fix: bool, verify: bool, as_json: bool) -> None:
    """Find objects whose content is missing (or corrupt, with --verify) and blobs no object uses.

    Exits with status 1 when problems were found and not fixed.
    """
    with open_store() as store:
        report = store.check(fix=fix, verify=verify)
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "fixed": report.fixed,
                "missing_content": report.missing_content,
                "corrupt_content": report.corrupt_content,
                "orphan_blobs": report.orphan_blobs,
            }
        )
    else:
        sections = (
            ("objects whose content is missing", report.missing_content),
            ("objects whose content is corrupt", report.corrupt_content),
            ("blobs no object uses", report.orphan_blobs),
        )
        for title, items in sections:
            if items:
                click.echo(f"{title}: {len(items)}")
                for item in items:
                    click.echo(f"  {item}")
        if report.ok:
            click.echo("ok: no problems found")
        elif report.fixed:
            click.echo("fixed: the objects above were deleted, orphan blobs removed")
        else:
            click.echo("run `objstore check --fix` to delete them")
    if not report.ok and not report.fixed:
        raise click.exceptions.Exit(EXIT_PROBLEMS)


@click.command()
@click.option(
    "--grace",
    metavar="DURATION",
    default=None,
    help='Keep unreferenced content younger than this, e.g. "1h" or "0s" (default: blobs.gc_grace_period).',
)
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@json_option
def gc(grace: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove blob content that no object refers to any more."""
    # The duration is read by the settings' own parser (same forms and messages as the config file).
    overrides: dict[str, Any] = {} if grace is None else {"blobs": {"gc_grace_period": grace}}
    with open_store(wording={_GRACE_SETTING: "--grace"}, **overrides) as store:
        report = store.collect_garbage(dry_run=dry_run)
    if as_json:
        emit_json(
            {
                "blobs_removed": report.blobs_removed,
                "bytes_removed": report.bytes_removed,
                "temp_files_removed": report.temp_files_removed,
                "dry_run": dry_run,
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {report.blobs_removed} blob(s), {human_size(report.bytes_removed)}, "
        f"and {report.temp_files_removed} temp file(s)"
    )


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
@json_option
def prune(dry_run: bool, as_json: bool) -> None:
    """Run every retention job once: old events, expired run objects and task logs, objects over the
    pipeline limit, then unreferenced blobs.

    A job that another process is running at the moment (`objstore serve` elsewhere) is skipped.
    """
    with open_store() as store:
        report = store.prune(dry_run=dry_run)
    if as_json:
        emit_json(report)
        return
    if dry_run:
        click.echo("dry run: nothing removed; would remove")
    for label, count in (
        ("events", report.events),
        ("run objects", report.run_objects),
        ("task logs", report.task_logs),
        ("pipeline objects", report.pipeline_objects),
        ("blobs", report.blobs),
    ):
        click.echo(f"{label}: {count}")
    if report.skipped:
        click.echo(f"skipped (another process is running them): {', '.join(report.skipped)}")
    if report.interrupted:
        click.echo(f"stopped part-way (the next prune finishes them): {', '.join(report.interrupted)}")
