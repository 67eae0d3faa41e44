"""Settings: sources and precedence, host-application keys, errors, paths, the encryption key, blob stores."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from objstore.config import (
    DEFAULT_ENCRYPTION_KEY,
    PLACEHOLDER_KEY,
    FilesystemBlobStore,
    HttpBlobStore,
    S3BlobStore,
    Settings,
)
from objstore.durations import format_duration, parse_duration
from objstore.errors import ConfigError, VaultError

KEY = "k" * 32

# The Example blocks of Gofer's configuration reference (reference/gofer-configuration.txt), concatenated.
GOFER_EXAMPLE = """
[api]
ignore_pipeline_run_events = false
run_parallelism_limit = 200
pipeline_version_retention = 10
event_log_retention = 15768000     # 6 months
event_prune_interval = 604800      # 1 week
log_level = "info"
task_execution_log_retention = 50  # total runs
task_execution_logs_dir = "/tmp"
task_execution_stop_timeout = 300  # 5 mins
admin_key = "test"

[development]
pretty_logging = true     # Tells the logging package to use human readable output.
bypass_auth = true        # Turns off auth.
use_included_certs = true # Automatically loads localhost certs for development.

[external_events]
enable = true
bind_address = "0.0.0.0:8081"
use_tls = false

[object_store]
engine = "sqlite"
pipeline_object_limit = 50
run_object_expiry = 50

[object_store.sqlite]
path = "/tmp/gofer_objects.db"

[secret_store]
engine = "sqlite"

[secret_store.sqlite]
path = "/tmp/gofer_secrets.db"
encryption_key = "changemechangemechangemechangeme"

[scheduler]
engine = "docker"

[scheduler.docker]
prune = true
prune_interval = 604800
timeout = 300           # Should be the same or more than the task_execution_stop_timeout

[server]
url = "http://localhost:8080"
bind_address = "0.0.0.0:8080"
extension_address = "172.17.0.1:8080"
shutdown_timeout = 15
storage_path = "/tmp/gofer.db"
storage_results_limit = 200
use_tls = false

[extensions]
install_std_extensions = true
stop_timeout = 300            # 5 mins
use_tls = false
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own OBJSTORE_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.upper().startswith("OBJSTORE_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.load(*args, **kwargs)  # type: ignore[arg-type]
    return str(caught.value)


# --- durations --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4380h", timedelta(hours=4380)),
        ("3h", timedelta(hours=3)),
        ("15m", timedelta(minutes=15)),
        ("30s", timedelta(seconds=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2h45m30s", timedelta(hours=2, minutes=45, seconds=30)),
        ("1.5h", timedelta(minutes=90)),
        ("250us", timedelta(microseconds=250)),
        ("300", timedelta(seconds=300)),
        (" 42 ", timedelta(seconds=42)),
        ("0", timedelta(0)),
        (15768000, timedelta(days=182.5)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=2), timedelta(minutes=2)),
    ],
)
def test_parse_duration_accepts_go_durations_and_seconds(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text, what="api.x") == expected


@pytest.mark.parametrize(
    "bad", ["-3h", "-1", -1, -0.5, "", "abc", "3d", "h", "1h-5m", "3 h", "1e3", True, float("nan")]
)
def test_parse_duration_refuses_negative_and_garbage(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(bad, what="api.event_log_retention")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("api.event_log_retention: ")
    assert '"4380h"' in message  # says how to write one


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(hours=4380), "4380h"),
        (timedelta(hours=3), "3h"),
        (timedelta(minutes=15), "15m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(microseconds=7), "7us"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration_round_trips(td: timedelta, text: str) -> None:
    assert format_duration(td) == text
    assert parse_duration(text, what="x") == td


# --- sources and precedence --------------------------------------------------------------------------


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.load()
    assert settings.config_file is None
    assert settings.api.event_log_retention == timedelta(hours=4380)
    assert settings.api.event_prune_interval == timedelta(hours=3)
    assert settings.api.task_execution_log_expiry == 20
    assert settings.api.task_execution_logs_dir == tmp_path / "objstore-data" / "task-logs"
    assert settings.object_store.engine == "sqlite"
    assert settings.object_store.pipeline_object_limit == 50
    assert settings.object_store.run_object_expiry == 50
    assert settings.object_store.sqlite.path == tmp_path / "objstore-data" / "objects.db"
    assert settings.secret_store.sqlite.path == tmp_path / "objstore-data" / "secrets.db"
    assert settings.secret_store.sqlite.encryption_key is None
    assert settings.server.storage_path == tmp_path / "objstore-data" / "objstore.db"
    assert settings.development.default_encryption is False
    assert settings.blobs.threshold == 131072
    assert settings.blobs.gc_grace_period == timedelta(hours=1)
    assert settings.blobs.stores == []


def test_precedence_defaults_file_environment_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "objstore.toml",
        "[object_store]\npipeline_object_limit = 2\nrun_object_expiry = 7\n"
        '[api]\nevent_log_retention = "48h"\n',
    )
    assert Settings.load(config).object_store.pipeline_object_limit == 2

    monkeypatch.setenv("OBJSTORE_OBJECT_STORE__PIPELINE_OBJECT_LIMIT", "3")
    monkeypatch.setenv("OBJSTORE_API__EVENT_LOG_RETENTION", "15m")
    settings = Settings.load(config)
    assert settings.object_store.pipeline_object_limit == 3
    assert settings.api.event_log_retention == timedelta(minutes=15)
    assert settings.object_store.run_object_expiry == 7  # from the file, untouched by the environment

    settings = Settings.load(config, object_store={"pipeline_object_limit": 4})
    assert settings.object_store.pipeline_object_limit == 4
    assert settings.object_store.run_object_expiry == 7
    assert settings.api.event_log_retention == timedelta(minutes=15)


def test_environment_variables_for_every_kind_of_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJSTORE_BLOBS__THRESHOLD", "0")
    monkeypatch.setenv("OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY", KEY)
    monkeypatch.setenv("OBJSTORE_DEVELOPMENT__PRETTY_LOGGING", "true")
    monkeypatch.setenv("OBJSTORE_API__EVENT_PRUNE_INTERVAL", "600")
    monkeypatch.setenv("OBJSTORE_OBJECT_STORE__SQLITE__PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("OBJSTORE_BLOBS__STORES", '[{"type": "s3", "bucket": "b"}]')
    settings = Settings.load()
    assert settings.blobs.threshold == 0
    assert settings.secret_store.sqlite.encryption_key is not None
    assert settings.secret_store.sqlite.encryption_key.get_secret_value() == KEY
    assert settings.development.pretty_logging is True
    assert settings.api.event_prune_interval == timedelta(seconds=600)
    assert settings.object_store.sqlite.path == tmp_path / "env.db"
    assert settings.blobs.stores == [S3BlobStore(bucket="b")]


def test_arguments_merge_deeply_with_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "objstore.toml",
        "[object_store]\npipeline_object_limit = 2\n[object_store.sqlite]\npath = 'file.db'\n"
        "[secret_store.sqlite]\npath = 'secrets-from-file.db'\n",
    )
    monkeypatch.setenv("OBJSTORE_OBJECT_STORE__RUN_OBJECT_EXPIRY", "9")
    settings = Settings.load(
        config,
        object_store={"sqlite": {"path": tmp_path / "arg.db"}},
        secret_store={"sqlite": {"encryption_key": KEY}},
    )
    assert settings.object_store.sqlite.path == tmp_path / "arg.db"
    assert settings.object_store.pipeline_object_limit == 2  # file, same section
    assert settings.object_store.run_object_expiry == 9  # environment, same section
    assert settings.secret_store.sqlite.path == tmp_path / "secrets-from-file.db"


def test_usable_without_file_in_tests(tmp_path: Path) -> None:
    settings = Settings.load(None, object_store={"sqlite": {"path": tmp_path / "o.db"}})
    assert settings.object_store.sqlite.path == tmp_path / "o.db"
    assert settings.config_file is None


def test_objstore_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "conf" / "objstore.toml", "[object_store]\npipeline_object_limit = 5\n")
    monkeypatch.setenv("OBJSTORE_CONFIG", str(config))
    settings = Settings.load()
    assert settings.config_file == config
    assert settings.object_store.pipeline_object_limit == 5

    other = write(tmp_path / "other.toml", "[object_store]\npipeline_object_limit = 6\n")
    assert Settings.load(other).object_store.pipeline_object_limit == 6  # a named file wins

    monkeypatch.setenv("OBJSTORE_CONFIG", "")
    assert Settings.load().config_file is None


def test_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    message = config_error(missing)
    assert str(missing) in message
    assert "does not exist" in message
    assert "objstore init-config" in message

    monkeypatch.setenv("OBJSTORE_CONFIG", str(missing))
    message = config_error()
    assert str(missing) in message
    assert "OBJSTORE_CONFIG" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[api]\ntask_execution_log_expiry = 3\nevent_log_retention = 4380h\n", "line 3, column 27"),
        ("[api]\n[api]\n", "line 2, column 5"),
        ("[api]\nevent_log_retention = ", "line 2, column 23"),
    ],
)
def test_invalid_toml_names_file_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    config = write(tmp_path / "objstore.toml", text)
    message = config_error(config)
    assert str(config) in message
    assert "not valid TOML" in message
    assert where in message
    assert "Traceback" not in message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "objstore.toml"
    config.write_bytes(b"[api]\n# \xff\xfe\n")
    message = config_error(config)
    assert str(config) in message
    assert "UTF-8" in message


# --- unknown keys and the host application's keys ----------------------------------------------------


def test_misspelt_key_in_owned_section_names_closest(tmp_path: Path) -> None:
    config = write(tmp_path / "objstore.toml", "[object_store]\npipline_object_limit = 3\n")
    message = config_error(config)
    assert str(config) in message
    assert "object_store" in message
    assert "'pipline_object_limit'" in message
    assert "did you mean 'pipeline_object_limit'" in message


def test_misspelt_subsection_and_section(tmp_path: Path) -> None:
    config = write(
        tmp_path / "objstore.toml",
        "[object_stor]\npipeline_object_limit = 3\n[secret_store.sqlit]\npath = 'x'\n[blobs]\ntreshold = 1\n",
    )
    message = config_error(config)
    assert "3 configuration problems" in message
    assert "'object_stor'; did you mean 'object_store'" in message
    assert "'sqlit'; did you mean 'sqlite'" in message
    assert "'treshold'; did you mean 'threshold'" in message
    assert len(message.splitlines()) == 4  # a header and one line per problem


def test_misspelt_key_in_blob_store(tmp_path: Path) -> None:
    config = write(tmp_path / "objstore.toml", '[[blobs.stores]]\ntype = "s3"\nbuckett = "b"\n')
    message = config_error(config)
    assert "blobs.stores[0]" in message
    assert "did you mean 'bucket'" in message


def test_misspelt_key_in_arguments(tmp_path: Path) -> None:
    message = config_error(None, object_store={"pipline_object_limit": 3})
    assert "arguments" in message
    assert "did you mean 'pipeline_object_limit'" in message
    message = config_error(None, objectstore={"pipeline_object_limit": 3})
    assert "did you mean 'object_store'" in message


def test_misspelt_environment_variable_names_closest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJSTORE_OBJECT_STORE__PIPELINE_OBJCT_LIMIT", "10")
    message = config_error()
    assert "OBJSTORE_OBJECT_STORE__PIPELINE_OBJCT_LIMIT" in message
    assert "did you mean OBJSTORE_OBJECT_STORE__PIPELINE_OBJECT_LIMIT" in message


def test_variables_that_are_not_settings_by_design(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OBJSTORE_NEW_ENCRYPTION_KEY", "n" * 32)
    monkeypatch.setenv("OBJSTORE_TEST_POSTGRES_URL", "postgresql://x")
    monkeypatch.setenv("OBJSTORE_TEST_ANYTHING", "1")
    monkeypatch.chdir(tmp_path)
    assert Settings.load().object_store.pipeline_object_limit == 50


def test_environment_json_must_be_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJSTORE_BLOBS__STORES", "[{type: s3}]")
    message = config_error()
    assert "OBJSTORE_BLOBS__STORES" in message
    assert "not valid JSON" in message


def test_host_sections_and_keys_are_ignored(tmp_path: Path) -> None:
    config = write(
        tmp_path / "objstore.toml",
        '[api]\nlog_level = "info"\nadmin_key = "x"\ntask_execution_log_expiry = 5\n'
        "[api.external_events_api]\nenable = true\n"
        '[server]\nhost = "localhost:8080"\ntls_cert_path = "c"\nuse_tls = false\n'
        "[development]\nbypass_auth = true\nuse_localhost_tls = true\n"
        '[scheduler]\nengine = "docker"\n[extensions]\nstop_timeout = 300\n[external_events]\nenable = true\n'
        '[metrics]\nenabled = true\n[logging]\nlevel = "debug"\n',
    )
    settings = Settings.load(config)
    assert settings.api.task_execution_log_expiry == 5
    assert "log_level" not in settings.api.model_dump()


def test_gofer_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path / "gofer.toml", GOFER_EXAMPLE)
    # Gofer's example ships the well-known default key: the file loads (objects need no key), and the
    # key is refused when secrets are used, unless development.default_encryption allows it.
    settings = Settings.load(config)
    assert settings.api.event_log_retention == timedelta(seconds=15768000)
    assert settings.api.event_prune_interval == timedelta(weeks=1)
    assert settings.api.task_execution_logs_dir == Path("/tmp")
    assert settings.api.task_execution_log_expiry == 20  # not in the example: the default
    assert settings.development.pretty_logging is True
    assert settings.object_store.engine == "sqlite"
    assert settings.object_store.pipeline_object_limit == 50
    assert settings.object_store.run_object_expiry == 50
    assert settings.object_store.sqlite.path == Path("/tmp/gofer_objects.db")
    assert settings.secret_store.sqlite.path == Path("/tmp/gofer_secrets.db")
    assert settings.secret_store.sqlite.encryption_key is not None
    assert settings.secret_store.sqlite.encryption_key.get_secret_value() == DEFAULT_ENCRYPTION_KEY
    assert settings.server.storage_path == Path("/tmp/gofer.db")
    with pytest.raises(VaultError, match="well-known default key"):
        settings.vault_key()
    monkeypatch.setenv("OBJSTORE_DEVELOPMENT__DEFAULT_ENCRYPTION", "true")
    assert Settings.load(config).vault_key().get_secret_value() == DEFAULT_ENCRYPTION_KEY


# --- validation errors ---------------------------------------------------------------------------------


def test_validation_errors_one_line_per_problem_with_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(
        tmp_path / "objstore.toml",
        '[object_store]\npipeline_object_limit = 0\nengine = "mysql"\n[api]\nevent_log_retention = "soon"\n',
    )
    monkeypatch.setenv("OBJSTORE_BLOBS__THRESHOLD", "lots")
    message = config_error(config)
    lines = message.splitlines()
    assert lines[0] == "4 configuration problems:"
    assert any(
        line.strip().startswith(f"object_store.pipeline_object_limit (in {config}): ")
        and "greater than or equal to 1" in line
        for line in lines
    )
    assert any(line.strip().startswith(f"object_store.engine (in {config}): ") for line in lines)
    assert any(line.strip().startswith(f"api.event_log_retention (in {config}): ") for line in lines)
    assert any(
        line.strip().startswith("blobs.threshold (environment variable OBJSTORE_BLOBS__THRESHOLD): ")
        for line in lines
    )
    assert "pydantic" not in message
    assert "Traceback" not in message


def test_postgres_engine_needs_url() -> None:
    message = config_error(None, object_store={"engine": "postgres"})
    assert message.startswith("object_store.engine (argument to Settings.load): ")
    assert "object_store.postgres.url" in message
    settings = Settings.load(
        None, object_store={"engine": "postgres", "postgres": {"url": "postgresql+psycopg://ci@db/objstore"}}
    )
    assert settings.object_store.postgres.url == "postgresql+psycopg://ci@db/objstore"


def test_booleans_are_not_counts() -> None:
    message = config_error(None, object_store={"run_object_expiry": True})
    assert "object_store.run_object_expiry" in message


# --- paths -----------------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    config = write(
        folder / "objstore.toml",
        '[api]\ntask_execution_logs_dir = "logs"\n[object_store.sqlite]\npath = "data/o.db"\n'
        '[server]\nstorage_path = "../var/s.db"\n[[blobs.stores]]\ntype = "filesystem"\npath = "blobs"\n'
        '[secret_store.sqlite]\npath = "/abs/secrets.db"\n',
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OBJSTORE_SECRET_STORE__SQLITE__PATH", "env/secrets.db")
    settings = Settings.load("etc/objstore.toml")  # relative config path: against the working folder
    assert settings.config_file == config
    assert settings.api.task_execution_logs_dir == folder / "logs"
    assert settings.object_store.sqlite.path == folder / "data" / "o.db"
    assert settings.server.storage_path == tmp_path / "var" / "s.db"
    assert settings.blob_stores() == [FilesystemBlobStore(path=folder / "blobs")]
    assert settings.secret_store.sqlite.path == folder / "env" / "secrets.db"  # environment: same rule

    settings = Settings.load(config, secret_store={"sqlite": {"path": "/abs/secrets.db"}})
    assert settings.secret_store.sqlite.path == Path("/abs/secrets.db")


def test_relative_paths_resolve_against_working_folder_without_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.load(None, object_store={"sqlite": {"path": "o.db"}})
    assert settings.object_store.sqlite.path == tmp_path / "o.db"
    assert all(p.is_absolute() for p in (settings.server.storage_path, settings.api.task_execution_logs_dir))


def test_for_directory_puts_everything_under_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBJSTORE_CONFIG", str(tmp_path / "not-read.toml"))
    settings = Settings.for_directory(tmp_path / "data", object_store={"pipeline_object_limit": 3})
    data = tmp_path / "data"
    assert settings.config_file is None
    assert settings.object_store.sqlite.path == data / "objects.db"
    assert settings.secret_store.sqlite.path == data / "secrets.db"
    assert settings.server.storage_path == data / "objstore.db"
    assert settings.api.task_execution_logs_dir == data / "task-logs"
    assert settings.blob_stores() == [FilesystemBlobStore(path=data / "blobs")]
    assert settings.object_store.pipeline_object_limit == 3


# --- the encryption key ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_key_of_wrong_length_refused(size: int) -> None:
    key = "x" * size
    message = config_error(None, secret_store={"sqlite": {"encryption_key": key}})
    assert message.startswith("secret_store.sqlite.encryption_key (argument to Settings.load): ")
    assert f"is {size} bytes long" in message
    assert "objstore init-config" in message
    assert "secrets.token_urlsafe(24)" in message
    if size:
        assert key not in message


def test_non_ascii_keys_count_bytes() -> None:
    wrong = "é" * 32  # 32 characters, 64 bytes
    message = config_error(None, secret_store={"postgres": {"encryption_key": wrong}})
    assert "secret_store.postgres.encryption_key" in message
    assert "is 64 bytes long" in message
    assert wrong not in message
    assert "é" not in message

    right = "é" * 16  # 16 characters, 32 bytes
    settings = Settings.load(None, secret_store={"sqlite": {"encryption_key": right}})
    assert settings.secret_store.sqlite.encryption_key is not None
    assert settings.secret_store.sqlite.encryption_key.get_secret_value() == right


def test_placeholder_key_refused_with_advice() -> None:
    message = config_error(None, secret_store={"sqlite": {"encryption_key": PLACEHOLDER_KEY}})
    assert "placeholder" in message
    assert "objstore init-config" in message


def test_default_key_only_with_default_encryption(tmp_path: Path) -> None:
    config = write(
        tmp_path / "objstore.toml", f'[secret_store.sqlite]\nencryption_key = "{DEFAULT_ENCRYPTION_KEY}"\n'
    )
    with pytest.raises(VaultError) as refused:
        Settings.load(config).vault_key()
    message = str(refused.value)
    assert message.startswith("secret_store.sqlite.encryption_key is the well-known default key")
    assert "development.default_encryption" in message
    assert DEFAULT_ENCRYPTION_KEY not in message

    settings = Settings.load(config, development={"default_encryption": True})
    assert settings.vault_key().get_secret_value() == DEFAULT_ENCRYPTION_KEY


def test_no_key_configured_says_how_to_set_one() -> None:
    with pytest.raises(VaultError, match="OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY"):
        Settings.load(None).vault_key()


def test_key_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_key = "Sup3rS3cretKey-0123456789abcdefg"
    token = "http-token-value"
    config = write(
        tmp_path / "objstore.toml",
        f'[secret_store.sqlite]\nencryption_key = "{secret_key}"\n'
        f'[secret_store.postgres]\nurl = "postgresql://ci:dbpassword@db/x"\nencryption_key = "{secret_key}"\n'
        f'[[blobs.stores]]\ntype = "http"\nhost = "h:1"\ntoken = "{token}"\n',
    )
    settings = Settings.load(config)
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.secret_store)]
    for text in shown:
        assert secret_key not in text
        assert token not in text
        assert "dbpassword" not in text
    assert settings.secret_store.encryption_key is not None
    assert settings.secret_store.encryption_key.get_secret_value() == secret_key

    # An error elsewhere in the same configuration does not show the key either.
    monkeypatch.setenv("OBJSTORE_OBJECT_STORE__RUN_OBJECT_EXPIRY", "-1")
    with pytest.raises(ConfigError) as caught:
        Settings.load(config)
    assert secret_key not in str(caught.value)
    assert secret_key not in repr(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None  # no ValidationError (holding the inputs) chained

    # A bad key from the environment: the message names the variable, never the value.
    bad_key = "short-secret-key-value"
    monkeypatch.delenv("OBJSTORE_OBJECT_STORE__RUN_OBJECT_EXPIRY")
    monkeypatch.setenv("OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY", bad_key)
    message = config_error(config)
    assert "OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY" in message
    assert bad_key not in message


# --- blob stores ------------------------------------------------------------------------------------------


def test_blob_store_union(tmp_path: Path) -> None:
    config = write(
        tmp_path / "objstore.toml",
        "[blobs]\nthreshold = 1024\ngc_grace_period = 90\n"
        '[[blobs.stores]]\ntype = "filesystem"\npath = "objstore-data/blobs"\n'
        '[[blobs.stores]]\ntype = "s3"\nbucket = "ci-artifacts"\nprefix = "blobs"\nregion = "eu-west-1"\n'
        'endpoint = "http://127.0.0.1:7480"\n'
        '[[blobs.stores]]\ntype = "s3"\nbucket = "minimal"\n'
        '[[blobs.stores]]\ntype = "http"\nhost = "localhost:7777"\n',
    )
    settings = Settings.load(config)
    assert settings.blobs.threshold == 1024
    assert settings.blobs.gc_grace_period == timedelta(seconds=90)
    fs, s3, minimal, http = settings.blob_stores()
    assert fs == FilesystemBlobStore(path=tmp_path / "objstore-data" / "blobs")
    assert s3 == S3BlobStore(
        bucket="ci-artifacts", prefix="blobs", region="eu-west-1", endpoint="http://127.0.0.1:7480"
    )
    assert minimal == S3BlobStore(bucket="minimal")
    assert minimal.prefix is None and minimal.region is None and minimal.endpoint is None
    assert isinstance(http, HttpBlobStore)
    assert (http.host, http.protocol, http.token) == ("localhost:7777", "http", None)


def test_blob_store_errors(tmp_path: Path) -> None:
    config = write(
        tmp_path / "objstore.toml",
        '[[blobs.stores]]\ntype = "s3"\n[[blobs.stores]]\ntype = "ftp"\n'
        '[[blobs.stores]]\ntype = "http"\nhost = "h"\nprotocol = "gopher"\n',
    )
    message = config_error(config)
    assert f"blobs.stores[0].bucket (in {config}): is required" in message
    assert "blobs.stores[1]" in message and "'ftp'" in message
    assert "blobs.stores[2].protocol" in message


def test_default_blob_store_beside_object_database(tmp_path: Path) -> None:
    settings = Settings.load(None, object_store={"sqlite": {"path": tmp_path / "db" / "objects.db"}})
    assert settings.blobs.stores == []
    assert settings.blob_stores() == [FilesystemBlobStore(path=tmp_path / "db" / "blobs")]


def test_direct_construction_reads_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OBJSTORE_OBJECT_STORE__PIPELINE_OBJECT_LIMIT", "7")
    settings = Settings()
    assert settings.object_store.pipeline_object_limit == 7
    assert settings.object_store.sqlite.path == tmp_path / "objstore-data" / "objects.db"


def test_command_line_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OBJSTORE_DEBUG", "OBJSTORE_NEW_ENCRYPTION_KEY", "OBJSTORE_TEST_POSTGRES_URL"):
        monkeypatch.setenv(name, "1")
    assert Settings.load(None).object_store.pipeline_object_limit == 50
    monkeypatch.setenv("OBJSTORE_DEBUGG", "1")
    with pytest.raises(ConfigError, match="OBJSTORE_DEBUGG"):
        Settings.load(None)


def test_undecodable_key_is_refused_without_quoting_it(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_part = "s3cr3t-material-\udcff"  # an undecodable byte from the environment, as Python sees it
    monkeypatch.setenv("OBJSTORE_SECRET_STORE__SQLITE__ENCRYPTION_KEY", secret_part)
    with pytest.raises(ConfigError) as refused:
        Settings.load(None)
    message = str(refused.value)
    assert "not valid UTF-8" in message
    assert "s3cr3t" not in message and "\udcff" not in message and "udcff" not in message
    assert refused.value.__cause__ is None and refused.value.__context__ is None
