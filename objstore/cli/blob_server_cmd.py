"""``objstore serve-blobs``: this store's blob backend over HTTP, for CI workers without database access."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from objstore.cli.context import open_store
from objstore.cli.logs import setup_logging
from objstore.errors import ConfigError

if TYPE_CHECKING:
    from objstore.blobs.http_server import BlobServer

__all__ = ["TOKEN_ENV_VAR", "serve_blobs"]

TOKEN_ENV_VAR = "OBJSTORE_BLOB_SERVER_TOKEN"

_log = logging.getLogger("objstore.blob_server")


def _parse_listen(value: str) -> tuple[str, int]:
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path or parts.query or "@" in value:
        raise click.BadParameter(
            f"expected HOST:PORT (e.g. 127.0.0.1:7777, 0.0.0.0:7777, [::1]:7777), got {value!r}",
            param_hint="--listen",
        )
    return parts.hostname, port


def _read_token(token_file: str | None) -> tuple[str | None, str | None]:
    """The token and a warning to log about where it came from, if any."""
    if token_file is None:
        token = os.environ.get(TOKEN_ENV_VAR, "").strip()
        return token or None, None
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        mode = stat.S_IMODE(os.stat(token_file).st_mode)
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"cannot read --token-file {token_file}: {reason}") from None
    if not token:
        raise ConfigError(f"--token-file {token_file} is empty; write the token in it")
    warning = None
    if mode & 0o077:
        warning = f"--token-file {token_file} is readable by other users (mode {mode:o}); chmod 600 it"
    return token, warning


@click.command("serve-blobs")
@click.option(
    "--listen",
    default="127.0.0.1:7777",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to listen on (port 0: any free port).",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help=f"File holding the bearer token clients must send (default: ${TOKEN_ENV_VAR}).",
)
@click.option(
    "--max-blob-size",
    type=click.IntRange(min=0),
    default=None,
    metavar="BYTES",
    help="Refuse uploads larger than this (default: no limit).",
)
@click.option(
    "--no-delete",
    is_flag=True,
    help="Refuse DELETE, so that clients' garbage collection cannot remove content.",
)
def serve_blobs(listen: str, token_file: str | None, max_blob_size: int | None, no_delete: bool) -> None:
    """Serve this store's blobs over HTTP (PUT/GET/HEAD/DELETE /blobs/SHA256) until SIGINT or SIGTERM,
    for CI workers that use it as an `http` blob store. Clients must send the token as
    `Authorization: Bearer TOKEN`; without a token the server only listens on a loopback address.
    Logs one JSON line per request (development.pretty_logging for readable lines).
    """
    from objstore.blobs.http_protocol import check_token, is_loopback
    from objstore.blobs.http_server import BlobServer

    host, port = _parse_listen(listen)
    token, warning = _read_token(token_file)
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve blobs on {host}, which is not a loopback address, without a token: anyone "
            f"who can reach it could read, add and delete content; give --token-file or set "
            f"{TOKEN_ENV_VAR}"
        )
    if token is not None:
        check_token(token)
    stop = threading.Event()
    running: list[BlobServer] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        for server in running:
            server.request_stop()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with open_store() as store:
            setup_logging(pretty=store.settings.development.pretty_logging)
            if warning is not None:
                _log.warning(warning)
            server = BlobServer(
                store.blob_backend,
                host,
                port,
                token=token,
                allow_anonymous=token is None,
                max_blob_size=max_blob_size,
                allow_delete=not no_delete,
            )
            running.append(server)
            if stop.is_set():
                server.request_stop()
            _log.info(
                "serving the blobs of %s on %s (pid %d)",
                store.blob_backend.name,
                server.url,
                os.getpid(),
                extra={
                    "url": server.url,
                    "port": server.port,
                    "pid": os.getpid(),
                    "auth": token is not None,
                    "deletes": not no_delete,
                },
            )
            if token is None:
                _log.warning("no token: every user of this machine can read, write and delete these blobs")
            server.serve_forever()
            _log.info("blob server stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
