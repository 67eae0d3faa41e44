"""The ``objstore`` command group: --config, --version, and one error handler for every command.

Every :class:`~objstore.errors.ObjStoreError` becomes one line ``objstore: error: <message>`` on stderr and
the exit code of :data:`objstore.cli.errors.EXIT_CODES`; any other exception one line
``objstore: internal error: ...`` (a traceback only with ``OBJSTORE_DEBUG=1``). The handler lives in the
group's ``invoke`` so that ``click.testing.CliRunner`` sees exactly what a shell sees.

Importing this module must stay cheap (``objstore --help`` < 300 ms): no engine, config, SQLAlchemy or
pydantic here or in the command modules at import time; commands import them when they run.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, NoReturn

import click

import objstore
from objstore.cli import (
    blob_server_cmd,
    blobs_cmd,
    config_cmd,
    db_cmd,
    events_cmd,
    maintenance_cmd,
    objects_cmd,
    runs_cmd,
    secrets_cmd,
    serve_cmd,
    stats_cmd,
)
from objstore.cli.context import CliState
from objstore.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    exit_code_for,
    one_line,
)
from objstore.errors import ObjStoreError

__all__ = ["DEBUG_ENV_VAR", "cli", "main"]

DEBUG_ENV_VAR = "OBJSTORE_DEBUG"


def _debug_requested() -> bool:
    value = os.environ.get(DEBUG_ENV_VAR, "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so that flushing at exit cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # no real file descriptor (e.g. under CliRunner): nothing will be flushed there


def _fail(message: str, code: int, error: BaseException, *, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    click.echo(f"objstore: {message}", err=True)
    raise click.exceptions.Exit(code)


class ObjstoreGroup(click.Group):
    """A click group that turns every exception of its commands into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = _debug_requested()
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except ObjStoreError as error:
            _fail(f"error: {one_line(error)}", exit_code_for(error), error, debug=debug)
        except BrokenPipeError:
            # The reader of stdout went away (`objstore objects ls | head -1`): nothing to report.
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except KeyboardInterrupt as error:
            _fail("interrupted", EXIT_INTERRUPTED, error, debug=debug)
        except Exception as error:
            _fail(
                f"internal error: {type(error).__name__}: {one_line(error)} "
                f"(set {DEBUG_ENV_VAR}=1 for a traceback)",
                EXIT_INTERNAL,
                error,
                debug=debug,
            )


@click.group(cls=ObjstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Configuration file (default: $OBJSTORE_CONFIG, else built-in defaults).",
)
@click.version_option(objstore.__version__, "--version", prog_name="objstore", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """objstore: pipeline and run objects, secrets, events and task logs on SQLite and a blob store.

    Errors print one line to stderr and exit non-zero: 3 configuration, 4 not found, 5 already exists,
    6 invalid name or value, 7 run expired, 8 integrity, 9 vault, 10 busy, 11 storage, 12 schema.
    """
    ctx.obj = CliState(config=config)


cli.add_command(config_cmd.init_config)
cli.add_command(db_cmd.db)
cli.add_command(runs_cmd.runs)
cli.add_command(objects_cmd.objects)
cli.add_command(secrets_cmd.secrets)
cli.add_command(maintenance_cmd.check)
cli.add_command(maintenance_cmd.gc)
cli.add_command(maintenance_cmd.prune)
cli.add_command(events_cmd.events)
cli.add_command(events_cmd.logs)
cli.add_command(stats_cmd.stats)
cli.add_command(serve_cmd.serve)
cli.add_command(blobs_cmd.blobs)
cli.add_command(blob_server_cmd.serve_blobs)


def main() -> NoReturn:
    """Console-script entry point (``objstore``, ``python -m objstore``)."""
    code: Any = 0
    try:
        cli.main(prog_name="objstore")
    except SystemExit as exit_:
        code = exit_.code
    try:
        sys.stdout.flush()  # buffered output written after the command returned
    except BrokenPipeError:
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
    sys.exit(code)
