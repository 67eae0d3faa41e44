"""``objstore events ls`` and ``objstore logs cat``: reading the event log and task execution logs."""

from __future__ import annotations

import json
import sys

import click

from objstore.cli.context import json_option, open_store, scope_options
from objstore.cli.output import emit_json, iso, print_table

__all__ = ["events", "logs"]


@click.group()
def events() -> None:
    """The event log."""


@events.command("ls")
@click.option("--after", type=int, default=None, metavar="ID", help="Events after this id, oldest first.")
@click.option("--limit", type=int, default=100, show_default=True, help="How many events (1-10000).")
@click.option("--kind", default=None, help="Only events of this kind.")
@click.option("-n", "--namespace", default=None, metavar="NS", help="Only events of this namespace.")
@click.option("-p", "--pipeline", default=None, metavar="PIPELINE", help="Only events of this pipeline.")
@json_option
def list_events(
    *,
    after: int | None,
    limit: int,
    kind: str | None,
    namespace: str | None,
    pipeline: str | None,
    as_json: bool,
) -> None:
    """List events, newest last: the newest LIMIT, or the LIMIT after --after ID."""
    if pipeline is not None and namespace is None:
        namespace = "default"
    with open_store() as store:
        found = store.events.list(after=after, limit=limit, kind=kind, namespace=namespace, pipeline=pipeline)
    if as_json:
        emit_json(found)
        return
    rows = [
        [
            str(e.id),
            iso(e.emitted_at),
            e.kind,
            "/".join(str(part) for part in (e.namespace, e.pipeline, e.run) if part is not None),
            json.dumps(e.details, ensure_ascii=False),
        ]
        for e in found
    ]
    if rows:
        print_table(["ID", "AT", "KIND", "WHERE", "DETAILS"], rows, right=[0])


@click.group()
def logs() -> None:
    """Task execution logs."""


@logs.command("cat")
@scope_options(run=False)
@click.option("-r", "--run", "run_number", type=int, required=True, metavar="RUN", help="Run number.")
@click.argument("task")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the task finishes.")
def cat(namespace: str, pipeline: str, run_number: int, task: str, follow: bool) -> None:
    """Print the log of TASK in a run (with --follow, until the task finishes)."""
    with open_store() as store:
        log = store.pipeline(namespace, pipeline).run(run_number).task_log(task)
        out = sys.stdout.buffer
        for chunk in log.stream(follow=follow):
            out.write(chunk)
            out.flush()
