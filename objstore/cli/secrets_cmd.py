"""``objstore secrets put|get|ls|rm|rotate-key|rotate-data-key``: a pipeline's secrets, or global ones.

A secret value is printed by ``secrets get`` to stdout and nowhere else: not in errors (``put``'s usage
errors are scrubbed of the words the user typed, since one of them may be the value), not in ``--json``,
not in warnings. Neither is an encryption key ever printed.
"""

from __future__ import annotations

import hmac
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from objstore.cli.context import json_option, namespace_option, open_store
from objstore.cli.output import emit_json, iso, print_table
from objstore.errors import ConfigError, InvalidValue, ObjStoreError, WrongEncryptionKey

if TYPE_CHECKING:
    from objstore import ObjStore
    from objstore.config import Settings
    from objstore.secret_handles import GlobalSecrets, PipelineSecrets

__all__ = ["secrets"]

F = TypeVar("F", bound=Callable[..., Any])

_REDACTED = "***"
_SHORTEST_REDACTED = 3  # shorter words would also blank out parts of click's own wording


def _stdin_is_terminal() -> bool:
    """Whether a person can be prompted (a function, so that tests can pretend)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


class _ScrubbedCommand(click.Command):
    """A command whose usage errors never repeat what was typed: one of the words may be a secret.

    ``secrets put -p build TOKEN -x9...`` would otherwise print ``No such option: -x9...``, and an unquoted
    value with spaces ``Got unexpected extra argument (...)``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        typed = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            message = error.message
            if isinstance(error, click.NoSuchOption):
                # Short options are reported by their first letter only: not covered by the words below.
                message = message.replace(f"'{error.option_name}'", f"'{_REDACTED}'")
            elif message.startswith("Got unexpected extra argument"):
                message = (
                    "Got unexpected extra arguments: quote a VALUE that has spaces, or better, give it on "
                    "stdin with -"
                )
            names = {opt for param in self.params for opt in (*param.opts, *param.secondary_opts)}
            words = {word for word in typed if word not in names and len(word) >= _SHORTEST_REDACTED}
            for word in sorted(words, key=len, reverse=True):
                message = message.replace(word, _REDACTED)
            raise click.UsageError(message, error.ctx) from None


def _scope_options(function: F) -> F:
    function = click.option(
        "--global", "is_global", is_flag=True, help="Global secrets (readable by allowed namespaces)."
    )(function)
    function = click.option("-p", "--pipeline", default=None, metavar="PIPELINE", help="Pipeline id.")(
        function
    )
    return namespace_option(function)


def _check_scope(pipeline: str | None, is_global: bool) -> None:
    """Exactly one of -p / --global; -n only with -p. A usage error (exit 2) before the store is opened."""
    ctx = click.get_current_context()
    if is_global and pipeline is not None:
        raise click.UsageError("give either -p PIPELINE or --global, not both", ctx)
    if not is_global and pipeline is None:
        raise click.UsageError(
            "give -p PIPELINE for a pipeline's secrets, or --global for global secrets", ctx
        )
    if is_global and ctx.get_parameter_source("namespace") is not ParameterSource.DEFAULT:
        raise click.UsageError(
            "global secrets belong to no namespace: drop -n/--namespace (to choose which namespaces may "
            "read a global secret, use --namespace-pattern with `secrets put --global`)",
            ctx,
        )


def _secrets_of(
    store: ObjStore, namespace: str, pipeline: str | None, is_global: bool
) -> PipelineSecrets | GlobalSecrets:
    if is_global or pipeline is None:
        return store.global_secrets
    return store.pipeline(namespace, pipeline).secrets


@click.group()
def secrets() -> None:
    """Secrets of a pipeline (-p PIPELINE) or global secrets (--global), encrypted at rest."""


@secrets.command(cls=_ScrubbedCommand)
@_scope_options
@click.argument("name")
@click.argument("value", required=False, default="-", metavar="[VALUE|-]")
@click.option("--overwrite", is_flag=True, help="Replace the secret if NAME exists.")
@click.option(
    "--namespace-pattern",
    "patterns",
    multiple=True,
    metavar="GLOB",
    help="With --global: namespaces that may read it (full-match glob, e.g. 'team-*'; repeatable). "
    "None: no pipeline can read it.",
)
@json_option
def put(
    *,
    namespace: str,
    pipeline: str | None,
    is_global: bool,
    name: str,
    value: str,
    overwrite: bool,
    patterns: tuple[str, ...],
    as_json: bool,
) -> None:
    """Store the secret NAME: VALUE, or stdin for - or no VALUE (a terminal is prompted without echo).

    Stdin is stored byte for byte: as text if it is UTF-8, else as bytes. `echo` adds a newline that
    becomes part of the secret; use `printf %s` to avoid it. A VALUE on the command line may be kept in
    your shell history: prefer stdin.
    """
    _check_scope(pipeline, is_global)
    if patterns and not is_global:
        raise click.UsageError(
            "--namespace-pattern applies to global secrets only: add --global", click.get_current_context()
        )
    from_command_line = value != "-"
    secret: str | bytes = value if from_command_line else _read_value(name)
    with open_store() as store:
        if is_global:
            info = store.global_secrets.put(name, secret, namespaces=list(patterns), overwrite=overwrite)
        else:
            assert pipeline is not None  # _check_scope
            info = store.pipeline(namespace, pipeline).secrets.put(name, secret, overwrite=overwrite)
    if from_command_line:
        click.echo(
            "objstore: warning: a VALUE on the command line may be kept in your shell history; "
            "pass - and give the value on stdin instead",
            err=True,
        )
    if is_global and not patterns:
        click.echo(
            f"objstore: note: no namespace may read global secret {name!r} yet; allow some with "
            "--namespace-pattern GLOB (and --overwrite)",
            err=True,
        )
    if as_json:
        emit_json(info)


def _read_value(name: str) -> str | bytes:
    """The value from stdin: bytes as they came, as str if they are UTF-8; a terminal is prompted."""
    if _stdin_is_terminal():
        text: str = click.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True, err=True)
        return text
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


@secrets.command()
@_scope_options
@click.argument("name")
def get(namespace: str, pipeline: str | None, is_global: bool, name: str) -> None:
    """Write the value of NAME to stdout exactly as stored (no newline added)."""
    _check_scope(pipeline, is_global)
    with open_store() as store:
        value = _secrets_of(store, namespace, pipeline, is_global).get(name)
    if isinstance(value, bytes):
        stdout = sys.stdout.buffer
        stdout.write(value)
        stdout.flush()
        return
    # Not click.echo: it strips ANSI escape sequences when stdout is not a terminal, which would change
    # the value.
    try:
        sys.stdout.write(value)
    except UnicodeEncodeError as error:
        # The codec's own message quotes the character it could not encode: a piece of the secret.
        raise InvalidValue(
            f"secret {name!r} is text that stdout's encoding ({error.encoding}) cannot represent; "
            "set PYTHONIOENCODING=utf-8"
        ) from None
    sys.stdout.flush()


@secrets.command("ls")
@_scope_options
@json_option
def list_secrets(namespace: str, pipeline: str | None, is_global: bool, as_json: bool) -> None:
    """List the secrets by name, with their creation and update times (never their values)."""
    _check_scope(pipeline, is_global)
    with open_store() as store:
        infos = _secrets_of(store, namespace, pipeline, is_global).list()
    if as_json:
        emit_json(infos)
    elif infos:
        rows = [[info.name, iso(info.created_at), iso(info.updated_at)] for info in infos]
        print_table(["NAME", "CREATED", "UPDATED"], rows)


@secrets.command("rm")
@_scope_options
@click.argument("name")
def remove(namespace: str, pipeline: str | None, is_global: bool, name: str) -> None:
    """Delete the secret NAME."""
    _check_scope(pipeline, is_global)
    with open_store() as store:
        _secrets_of(store, namespace, pipeline, is_global).delete(name)


@secrets.command("rotate-key")
def rotate_key() -> None:
    """Change the encryption key: the configured key stays set while this runs; the new one comes from
    $OBJSTORE_NEW_ENCRYPTION_KEY, else a prompt. Then configure the new key: the old one stops working.

    Running it again with the same new key (before or after configuring it) does nothing.
    """
    try:
        store = open_store()
    except WrongEncryptionKey as wrong:
        # Perhaps an earlier run already rotated to the new key and the configuration still names the
        # old one: that is "nothing to do", not an error.
        try:
            new_key = _new_key()
        except ConfigError:
            raise wrong from None
        _already_rotated(new_key, wrong)
        return
    with store:
        new_key = _new_key()
        rotated = store.rotate_encryption_key(new_key)
        configured = store.settings.vault_key().get_secret_value()
        location = _key_location(store.settings)
    if rotated:
        click.echo("rotated: the secrets are now protected by the new encryption key; the old key no longer")
        click.echo("opens them, and processes started with it fail with a wrong-key error.")
        click.echo(f"Now set {location} to the new key.")
    elif hmac.compare_digest(configured.encode("utf-8"), new_key.encode("utf-8")):
        click.echo("nothing to do: the new key is already the configured key.")
    else:
        click.echo("nothing to do: the secrets are already protected by the new key.")
        click.echo(f"Now set {location} to the new key.")


def _new_key() -> str:
    from objstore.config import NEW_KEY_ENV_VAR

    key = os.environ.get(NEW_KEY_ENV_VAR, "")
    if key:
        return key
    if not _stdin_is_terminal():
        raise ConfigError(
            f"no new encryption key: set {NEW_KEY_ENV_VAR} to the new key (32 bytes, e.g. from "
            "`objstore init-config`), or run `objstore secrets rotate-key` in a terminal to be prompted"
        )
    prompted: str = click.prompt("New encryption key", hide_input=True, confirmation_prompt=True, err=True)
    return prompted


def _already_rotated(new_key: str, wrong: WrongEncryptionKey) -> None:
    """Report "nothing to do" if ``new_key`` opens the vault; else raise ``wrong`` (the configured key
    opens nothing)."""
    key_override = {"encryption_key": new_key}
    try:
        store = open_store(secret_store={"sqlite": key_override, "postgres": key_override})
    except ObjStoreError:
        raise wrong from None
    with store:
        location = _key_location(store.settings)
    click.echo("nothing to do: the secrets are already protected by the new key, but the configured key")
    click.echo(f"is the old one. Now set {location} to the new key.")


def _key_location(settings: Settings) -> str:
    """Where the configured key comes from, for "now set ... to the new key"."""
    from objstore.config import env_var_name

    engine = settings.secret_store.engine
    setting = f"secret_store.{engine}.encryption_key"
    env_var = env_var_name(("secret_store", engine, "encryption_key"))
    if env_var in os.environ:
        return f"{env_var} (set in the environment, it overrides the configuration file)"
    if settings.config_file is not None:
        return f"{setting} in {settings.config_file}"
    return f"{setting} in the configuration file (or {env_var})"


@secrets.command("rotate-data-key")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    metavar="N",
    help="Secrets resealed per transaction.",
)
def rotate_data_key(batch_size: int) -> None:
    """Seal every secret with a fresh data key (the configured key stays the same). Safe to re-run."""
    with open_store() as store:
        moved = store.rotate_data_key(batch_size=batch_size)
    click.echo(f"resealed {moved} {_plural(moved, 'secret')} with a fresh data key")


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else f"{noun}s"
