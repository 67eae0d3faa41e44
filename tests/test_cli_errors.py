"""The command line's exit-code table, one-line messages, output helpers and import weight."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from objstore import errors
from objstore.cli import output
from objstore.cli.errors import EXIT_CODES, exit_code_for, one_line


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.ConfigError("x"), 3),
        (errors.NotFound("x"), 4),
        (errors.ObjectNotFound("x"), 4),
        (errors.RunNotFound("x"), 4),
        (errors.SecretNotFound("x"), 4),
        (errors.AlreadyExists("x"), 5),
        (errors.InvalidName("x"), 6),
        (errors.InvalidValue("x"), 6),
        (errors.RunExpired("x"), 7),
        (errors.IntegrityError("x"), 8),
        (errors.VaultError("x"), 9),
        (errors.WrongEncryptionKey("x"), 9),
        (errors.StorageBusy("x"), 10),
        (errors.StorageError("x"), 11),
        (errors.SchemaError("x"), 12),
        (errors.ObjStoreError("x"), 1),
    ],
)
def test_exit_code_table(error: errors.ObjStoreError, code: int) -> None:
    assert exit_code_for(error) == code


def test_every_error_class_has_a_distinct_meaningful_code() -> None:
    public = [getattr(errors, name) for name in errors.__all__]
    for cls in public:
        code = exit_code_for(cls("x"))
        assert code == 1 if cls is errors.ObjStoreError else code >= 3, cls
    assert 2 not in EXIT_CODES.values()  # click's usage errors keep 2


def test_one_line() -> None:
    assert one_line(ValueError("plain")) == "plain"
    assert one_line(ValueError("2 configuration problems:\n  a: bad\n  b: worse")) == (
        "2 configuration problems: a: bad; b: worse"
    )
    assert one_line(ValueError("")) == "ValueError"


def test_human_size() -> None:
    assert output.human_size(0) == "0 B"
    assert output.human_size(1023) == "1023 B"
    assert output.human_size(1536) == "1.5 KiB"
    assert output.human_size(20 << 20) == "20.0 MiB"
    assert output.human_size(3 << 40) == "3.0 TiB"


def test_plain_json_values() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    from objstore import RunInfo

    assert output.plain([RunInfo("default", "build", 1, moment)]) == [
        {"namespace": "default", "pipeline": "build", "number": 1, "started_at": "2024-01-02T03:04:05+00:00"}
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_for_large_transfers(monkeypatch: pytest.MonkeyPatch) -> None:
    big = output.PROGRESS_THRESHOLD + 1
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    with output.progress(big, "put") as advance:
        advance(big)
    assert plain.getvalue() == ""

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with output.progress(1024, "put") as advance:
        advance(1024)
    with output.progress(None, "put") as advance:
        advance(big)
    assert terminal.getvalue() == ""
    with output.progress(big, "put big") as advance:
        reader = output.CountingReader(io.BytesIO(b"x" * 10), advance)
        assert reader.read(4) == b"xxxx"
        assert reader.read() == b"x" * 6
        assert reader.read() == b""
    assert "put big" in terminal.getvalue()


def test_importing_the_command_line_stays_light() -> None:
    # `objstore --help` must stay fast: no engine, settings, pydantic or SQLAlchemy at import time.
    code = (
        "import sys, objstore.cli.main\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'pydantic', 'pydantic_core', 'pydantic_settings', 'alembic', 'cryptography') "
        "or m in ('objstore.engine', 'objstore.config', 'objstore.sample_config', 'objstore.handles'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
