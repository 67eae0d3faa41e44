"""What the commands print: one JSON document, aligned tables, sizes and times, progress bars on stderr."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, BinaryIO

import click

__all__ = [
    "PROGRESS_THRESHOLD",
    "CountingReader",
    "emit_json",
    "human_size",
    "iso",
    "plain",
    "print_table",
    "progress",
    "regular_file_size",
]

# Transfers smaller than this finish too fast for a progress bar to be worth drawing.
PROGRESS_THRESHOLD = 8 << 20


def plain(value: Any) -> Any:
    """Dataclasses (ObjectInfo, reports), datetimes and lists as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return value


def emit_json(document: Any) -> None:
    """Print exactly one JSON document to stdout."""
    click.echo(json.dumps(plain(document), indent=2, ensure_ascii=False))


def iso(moment: datetime) -> str:
    """A timestamp for tables: ISO 8601, to the second."""
    return moment.isoformat(timespec="seconds")


def human_size(size: int) -> str:
    """1023 -> "1023 B", 1536 -> "1.5 KiB", 20971520 -> "20.0 MiB"."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> None:
    """Columns aligned on the widest cell; ``right`` lists the columns aligned right (numbers)."""
    widths = [max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ]
        return "  ".join(padded).rstrip()

    click.echo(line(headers))
    for row in rows:
        click.echo(line(row))


def regular_file_size(stream: BinaryIO) -> int | None:
    """The size of a stream that is a regular file (not a pipe or terminal), else None."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return None  # no file descriptor (e.g. an in-memory stream in tests)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


class CountingReader:
    """A binary reader that reports how many bytes each ``read`` returned (to drive a progress bar)."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_read = on_read

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        if data:
            self._on_read(len(data))
        return data


@contextmanager
def progress(size: int | None, label: str, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A callback that advances a progress bar on stderr by n bytes.

    The bar is drawn only when stderr is a terminal, ``enabled`` is true and the transfer is known to be
    larger than :data:`PROGRESS_THRESHOLD`; otherwise the callback does nothing.
    """
    if not enabled or size is None or size <= PROGRESS_THRESHOLD or not sys.stderr.isatty():
        yield lambda _n: None
        return
    with click.progressbar(length=size, label=label, file=sys.stderr, show_pos=False) as bar:
        yield bar.update
