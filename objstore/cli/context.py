"""What commands share: the --config path from the group, opening the store, the scope options.

``objstore.open`` is looked up when a command runs: the ``objstore`` package loads its engine (pydantic,
SQLAlchemy) lazily, so importing the command line stays fast for ``--help``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

import objstore
from objstore.errors import ConfigError

if TYPE_CHECKING:
    from objstore import Objects, ObjStore

__all__ = ["CliState", "json_option", "objects_of", "open_store", "scope_options"]

F = TypeVar("F", bound=Callable[..., Any])

# Settings.load's errors name their source as a library caller sees it; the command line user typed
# --config.
_CLI_WORDING = {"named by the path given to Settings.load": "named by --config"}


@dataclass(frozen=True, slots=True)
class CliState:
    """The group's options, handed to every command through ``ctx.obj``."""

    config: str | None = None


def open_store(
    *, upgrade_schema: bool = True, wording: Mapping[str, str] | None = None, **overrides: Any
) -> ObjStore:
    """Open the store named by ``--config`` (None: ``$OBJSTORE_CONFIG``, else the defaults).

    ``overrides`` are settings sections passed to ``objstore.open``; ``wording`` maps the phrases of
    their configuration errors to the options the user typed (``{"blobs.gc_grace_period (argument to
    Settings.load)": "--grace"}``).
    """
    state = click.get_current_context().find_object(CliState)
    config = state.config if state is not None else None
    try:
        return objstore.open(config, upgrade_schema=upgrade_schema, **overrides)
    except ConfigError as error:
        message = original = str(error)
        for api_phrase, cli_phrase in {**_CLI_WORDING, **(wording or {})}.items():
            message = message.replace(api_phrase, cli_phrase)
        if message == original:
            raise
        raise ConfigError(message) from None


def objects_of(store: ObjStore, namespace: str, pipeline: str, run: int | None) -> Objects:
    """The pipeline's objects, or the objects of one of its runs (``RunNotFound`` if it does not exist)."""
    pipe = store.pipeline(namespace, pipeline)
    return pipe.objects if run is None else pipe.run(run).objects


def namespace_option(function: F) -> F:
    return click.option(
        "-n", "--namespace", default="default", show_default=True, metavar="NS", help="Namespace."
    )(function)


def pipeline_option(function: F) -> F:
    return click.option("-p", "--pipeline", required=True, metavar="PIPELINE", help="Pipeline id.")(function)


def scope_options(*, run: bool) -> Callable[[F], F]:
    """-n/--namespace, -p/--pipeline and, with ``run``, -r/--run (omitted: the pipeline's own objects)."""

    def decorate(function: F) -> F:
        if run:
            function = click.option(
                "-r",
                "--run",
                type=int,
                default=None,
                metavar="RUN",
                help="Run number (omitted: pipeline objects).",
            )(function)
        return namespace_option(pipeline_option(function))

    return decorate


def json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(function)
