"""``objstore runs start`` and ``objstore runs ls``."""

from __future__ import annotations

import click

from objstore.cli.context import json_option, open_store, scope_options
from objstore.cli.output import emit_json, iso, print_table

__all__ = ["runs"]


@click.group()
def runs() -> None:
    """Runs of a pipeline."""


@runs.command()
@scope_options(run=False)
@json_option
def start(namespace: str, pipeline: str, as_json: bool) -> None:
    """Start the pipeline's next run and print its number (expires the run objects it makes old)."""
    with open_store() as store:
        run = store.pipeline(namespace, pipeline).start_run()
    if as_json:
        emit_json(run.info)
    else:
        click.echo(run.number)


@runs.command("ls")
@scope_options(run=False)
@json_option
def list_runs(namespace: str, pipeline: str, as_json: bool) -> None:
    """List the pipeline's runs, oldest first."""
    with open_store() as store:
        infos = store.pipeline(namespace, pipeline).runs()
    if as_json:
        emit_json(infos)
    elif infos:
        rows = [[str(info.number), iso(info.started_at)] for info in infos]
        print_table(["RUN", "STARTED"], rows, right=[0])
