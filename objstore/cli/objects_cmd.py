"""``objstore objects put|get|ls|rm``: pipeline objects, or a run's objects with ``-r RUN``.

Values stream: ``put`` hands the store a binary file object (never the whole file in memory), ``get``
copies the store's verified reader in bounded chunks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from objstore.cli.context import json_option, objects_of, open_store, scope_options
from objstore.cli.files import atomic_output, copy_stream, input_stream
from objstore.cli.output import CountingReader, emit_json, human_size, iso, print_table, progress

__all__ = ["objects"]


@click.group()
def objects() -> None:
    """Pipeline objects, or the objects of one run (-r RUN)."""


@objects.command()
@scope_options(run=True)
@click.argument("key")
@click.argument(
    "file",
    required=False,
    default="-",
    metavar="[FILE|-]",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@click.option("--overwrite", is_flag=True, help="Replace the object if KEY exists.")
@click.option("--content-type", metavar="TYPE", default=None, help="Media type (default: guessed from KEY).")
@json_option
def put(
    *,
    namespace: str,
    pipeline: str,
    run: int | None,
    key: str,
    file: str,
    overwrite: bool,
    content_type: str | None,
    as_json: bool,
) -> None:
    """Store FILE (or stdin, for - or no FILE) under KEY."""
    with open_store() as store:
        target = objects_of(store, namespace, pipeline, run)
        with input_stream(file) as (stream, size), progress(size, f"put {key}") as advance:
            info = target.put(
                key, CountingReader(stream, advance), overwrite=overwrite, content_type=content_type
            )
    if as_json:
        emit_json(info)


@objects.command()
@scope_options(run=True)
@click.argument("key")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write to FILE (replaced only once the whole object is read and verified) instead of stdout.",
)
def get(namespace: str, pipeline: str, run: int | None, key: str, output: Path | None) -> None:
    """Write the object KEY to stdout or to FILE."""
    with open_store() as store:
        target = objects_of(store, namespace, pipeline, run)
        if output is None or str(output) == "-":
            stdout = sys.stdout.buffer
            with target.open(key) as reader:
                copy_stream(reader, stdout)
            stdout.flush()
            return
        size = target.info(key).size
        with (
            target.open(key) as reader,
            progress(size, f"get {key}") as advance,
            atomic_output(output) as out,
        ):
            copy_stream(reader, out, advance)


@objects.command("ls")
@scope_options(run=True)
@json_option
def list_objects(namespace: str, pipeline: str, run: int | None, as_json: bool) -> None:
    """List the objects, oldest first: key, size, creation time, sha256 (shortened)."""
    with open_store() as store:
        infos = objects_of(store, namespace, pipeline, run).list()
    if as_json:
        emit_json(infos)
    elif infos:
        rows = [[i.key, human_size(i.size), iso(i.created_at), i.sha256[:12]] for i in infos]
        print_table(["KEY", "SIZE", "CREATED", "SHA256"], rows, right=[1])


@objects.command("rm")
@scope_options(run=True)
@click.argument("key")
def remove(namespace: str, pipeline: str, run: int | None, key: str) -> None:
    """Delete the object KEY (its content is removed later by garbage collection)."""
    with open_store() as store:
        objects_of(store, namespace, pipeline, run).delete(key)
