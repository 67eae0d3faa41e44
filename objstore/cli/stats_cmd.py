"""``objstore stats``: counts and bytes per store, the oldest event, database and blob sizes."""

from __future__ import annotations

import click

from objstore.cli.context import json_option, open_store
from objstore.cli.output import emit_json, human_size, iso, print_table

__all__ = ["stats"]


@click.command()
@json_option
def stats(as_json: bool) -> None:
    """Show what the store holds: objects, blobs, secrets, events, task logs and the database files."""
    with open_store() as store:
        found = store.stats()
    if as_json:
        emit_json(found)
        return
    events = f"{found.events}"
    if found.oldest_event is not None and found.newest_event is not None:
        events += f" (oldest {iso(found.oldest_event)}, newest {iso(found.newest_event)})"
    rows = [
        ("pipelines", str(found.pipelines), ""),
        ("runs", str(found.runs), ""),
        ("pipeline objects", str(found.pipeline_objects), human_size(found.pipeline_object_bytes)),
        ("run objects", str(found.run_objects), human_size(found.run_object_bytes)),
        ("  of which inline", "", human_size(found.inline_bytes)),
        ("blobs", str(found.blobs), human_size(found.blob_bytes)),
        ("pipeline secrets", str(found.pipeline_secrets), ""),
        ("global secrets", str(found.global_secrets), ""),
        ("events", events, ""),
        ("task logs", str(found.task_logs), human_size(found.task_log_bytes)),
    ]
    print_table(("store", "count", "bytes"), rows, right=(2,))
    click.echo("")
    print_table(
        ("database", "holds", "bytes"),
        [(d["path"], d["holds"].split(" /", 1)[0], human_size(d["bytes"])) for d in found.databases],
        right=(2,),
    )
