"""``objstore init-config``: a commented sample configuration with a fresh random encryption key."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from objstore.errors import AlreadyExists, StorageError

__all__ = ["init_config"]

PRIVATE_FILE_MODE = 0o600


@click.command("init-config")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write to FILE (created with mode 0600: it holds the key) instead of stdout.",
)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def init_config(output: Path | None, force: bool) -> None:
    """Print a commented sample configuration with a fresh random encryption key."""
    from objstore.sample_config import new_encryption_key, render_sample_config

    text = render_sample_config(new_encryption_key())
    if output is None or str(output) == "-":
        click.echo(text, nl=False)
        return
    write_private_file(output, text.encode("utf-8"), force=force)


def write_private_file(path: Path, data: bytes, *, force: bool) -> None:
    """Create ``path`` with mode 0600 whatever the umask; an existing file is replaced only with ``force``.

    Without ``force`` the file is created with O_EXCL (no race with another writer); with it, the text goes
    to a temp file beside ``path`` that is renamed over it, so the old file is never half overwritten.
    """
    exists = AlreadyExists(f"{path} already exists; use --force to overwrite it, or choose another file")
    if path.exists() and not force:
        raise exists
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if force else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        raise exists from None
    except OSError as error:
        raise StorageError(
            f"cannot create {path}: {error.strerror}; check the folder and its permissions"
        ) from None
    try:
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # O_CREAT's mode is reduced by the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            os.replace(target, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise StorageError(f"cannot write {path}: {error.strerror}") from None
