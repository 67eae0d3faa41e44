"""objstore's settings: a TOML file, ``OBJSTORE_*`` environment variables and keyword arguments.

The file may be the host application's own (Gofer-style) configuration: sections and keys that belong to
the host are left alone, while a misspelt key in a section objstore owns is an error that names the closest
valid key. :meth:`Settings.load` reads the sources itself (rather than through pydantic-settings' sources)
because every error message has to name the file or environment variable a bad value came from. The
reading is in :mod:`objstore.config_sources`, the wording of errors in :mod:`objstore.config_errors`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from objstore.config_blobs import (
    DEFAULT_BLOB_THRESHOLD,
    STORE_TYPES,
    BlobCacheSettings,
    BlobSettings,
    BlobStore,
    FilesystemBlobStore,
    HttpBlobStore,
    S3BlobStore,
)
from objstore.config_errors import LocatedError, join_problems, validation_problems
from objstore.config_sources import SettingsShape, deep_merge, plain_overrides, read_sources
from objstore.config_types import DatabaseUrl, Duration, WholeNumber
from objstore.config_types import Section as _Section
from objstore.errors import ConfigError, VaultError
from objstore.urls import mask_password

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_BLOB_THRESHOLD",
    "DEFAULT_ENCRYPTION_KEY",
    "ENCRYPTION_KEY_BYTES",
    "ENV_PREFIX",
    "HOST_KEYS",
    "HOST_SECTIONS",
    "NEW_KEY_ENV_VAR",
    "PLACEHOLDER_KEY",
    "SHARED_SECTIONS",
    "ApiSettings",
    "BlobCacheSettings",
    "BlobSettings",
    "BlobStore",
    "DevelopmentSettings",
    "FilesystemBlobStore",
    "HttpBlobStore",
    "ObjectStoreSettings",
    "ObjectStoreSqlite",
    "PostgresSettings",
    "S3BlobStore",
    "SchedulerSettings",
    "SecretStorePostgres",
    "SecretStoreSettings",
    "SecretStoreSqlite",
    "ServerSettings",
    "Settings",
    "env_var_name",
]

ENV_PREFIX = "OBJSTORE_"
CONFIG_ENV_VAR = "OBJSTORE_CONFIG"
NEW_KEY_ENV_VAR = "OBJSTORE_NEW_ENCRYPTION_KEY"
DEBUG_ENV_VAR = "OBJSTORE_DEBUG"  # the command line's traceback switch, not a setting
_TEST_ENV_PREFIX = "OBJSTORE_TEST_"
DEFAULT_ENCRYPTION_KEY = "changemechangemechangemechangeme"
PLACEHOLDER_KEY = "<run: objstore init-config>"
ENCRYPTION_KEY_BYTES = 32
_MAKE_KEY_HINT = (
    'create one with `objstore init-config` or `python -c "import secrets; print(secrets.token_urlsafe(24))"`'
)

# The host application's sections and keys (Gofer's configuration reference): accepted and ignored.
HOST_SECTIONS = frozenset({"extensions", "external_events"})
# Sections shared with the host: Gofer's [scheduler] configures its container scheduler (engine, docker,
# ...); objstore reads only its own keys there (SchedulerSettings) and leaves every other key alone.
SHARED_SECTIONS = frozenset({"scheduler"})
HOST_KEYS: Mapping[str, frozenset[str]] = {
    "api": frozenset(
        {
            "ignore_pipeline_run_events",
            "run_parallelism_limit",
            "pipeline_version_retention",
            "log_level",
            "task_execution_log_retention",
            "task_execution_stop_timeout",
            "admin_key",
            "external_events_api",
        }
    ),
    "server": frozenset(
        {
            "host",
            "url",
            "bind_address",
            "extension_address",
            "shutdown_timeout",
            "tls_cert_path",
            "tls_key_path",
            "storage_results_limit",
            "use_tls",
        }
    ),
    "development": frozenset({"bypass_auth", "use_localhost_tls", "use_included_certs"}),
}


# The folder relative paths resolve against while Settings.load() builds settings.
_LOADING_FROM: ContextVar[Path | None] = ContextVar("objstore_config_base", default=None)


def _check_key(key: SecretStr) -> SecretStr:
    text = key.get_secret_value()
    if text == PLACEHOLDER_KEY:
        raise ValueError(
            "is the placeholder of sample-config.toml, not a key; run `objstore init-config` to write a "
            "configuration with a fresh key"
        )
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        # Undecodable bytes from the environment arrive as surrogates: say so without quoting any of it.
        raise ValueError(
            f"the encryption key is not valid UTF-8 text; it must be exactly {ENCRYPTION_KEY_BYTES} bytes: "
            f"{_MAKE_KEY_HINT}"
        ) from None
    if size != ENCRYPTION_KEY_BYTES:
        note = "" if text.isascii() else " (characters outside ASCII take 2 to 4 bytes each)"
        raise ValueError(
            f"the encryption key is {size} bytes long in UTF-8{note}; it must be exactly "
            f"{ENCRYPTION_KEY_BYTES} bytes: {_MAKE_KEY_HINT}"
        )
    return key


EncryptionKey = Annotated[SecretStr, AfterValidator(_check_key)]
Engine = Literal["sqlite", "postgres"]


class ApiSettings(_Section):
    event_log_retention: Duration = Field(
        timedelta(hours=4380), description="How long events are kept before the prune job removes them."
    )
    event_prune_interval: Duration = Field(
        timedelta(hours=3),
        description="How often the prune job looks for events older than event_log_retention.",
    )
    task_execution_logs_dir: Path = Field(
        Path("objstore-data/task-logs"), description="Folder of the task execution log files."
    )
    task_execution_log_expiry: WholeNumber = Field(
        20, ge=1, description="Number of runs after which the task execution logs of a run are deleted."
    )

    @field_validator("event_prune_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError('must be longer than zero, e.g. "3h"')
        return value


class SchedulerSettings(_Section):
    enabled: bool = Field(
        True,
        description="Run the pruning jobs on a schedule in `objstore serve` (and "
        "ObjStore.start_scheduler()). Set false when cron runs `objstore prune` instead. Other keys of "
        "this section belong to the host.",
    )
    prune_interval: Duration = Field(
        timedelta(minutes=15),
        description="How often expired run objects and task logs, objects over the pipeline limit and "
        "unreferenced blobs are pruned (events follow api.event_prune_interval).",
    )
    lease_ttl: Duration = Field(
        timedelta(seconds=60),
        description="How long a pruning job's lease lasts without renewal: of several processes sharing "
        "the databases one prunes at a time, and a crashed one is taken over after this long.",
    )
    misfire_grace_time: Duration = Field(
        timedelta(minutes=10),
        description="A scheduled job that could not start on time (the process was busy or suspended) still "
        "runs if it is late by less than this; missed runs are coalesced into one.",
    )

    @field_validator("prune_interval", "lease_ttl", "misfire_grace_time")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError('must be at least one second, e.g. "60s"')
        return value


class ObjectStoreSqlite(_Section):
    path: Path = Field(
        Path("objstore-data/objects.db"), description="SQLite database file; created if it does not exist."
    )


class PostgresSettings(_Section):
    url: DatabaseUrl | None = Field(
        None,
        description="SQLAlchemy URL of the PostgreSQL database (needs the objstore[postgres] extra).",
        examples=["postgresql+psycopg://ci@db.internal/objstore"],
    )

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # A database URL may carry a password.
        for name, value in super().__repr_args__():
            yield name, mask_password(value) if name == "url" and isinstance(value, str) else value


class ObjectStoreSettings(_Section):
    engine: Engine = Field(
        "sqlite", description='Database of pipeline and run objects: "sqlite" or "postgres".'
    )
    pipeline_object_limit: WholeNumber = Field(
        50, ge=1, description="Most objects kept per pipeline; storing one more deletes the oldest."
    )
    run_object_expiry: WholeNumber = Field(
        50,
        ge=1,
        description="Number of runs after which a run's objects are deleted: with 2, objects of run 5 are "
        "deleted when run 7 starts.",
    )
    sqlite: ObjectStoreSqlite = Field(
        default_factory=ObjectStoreSqlite, description="The SQLite object database."
    )
    postgres: PostgresSettings = Field(
        default_factory=PostgresSettings, description="The PostgreSQL object database."
    )

    @model_validator(mode="after")
    def _engine_configured(self) -> Self:
        if self.engine == "postgres" and not self.postgres.url:
            raise LocatedError(
                ("engine",),
                'is "postgres" but object_store.postgres.url is not set; set it or use engine "sqlite"',
            )
        return self


class SecretStoreSqlite(_Section):
    path: Path = Field(
        Path("objstore-data/secrets.db"), description="SQLite database file; created if it does not exist."
    )
    encryption_key: EncryptionKey | None = Field(
        None,
        description=f"Key that encrypts the secrets: exactly {ENCRYPTION_KEY_BYTES} bytes. It cannot change "
        "once secrets are stored, except with `objstore secrets rotate-key`. Unset: secrets are unavailable.",
    )


class SecretStorePostgres(PostgresSettings):
    encryption_key: EncryptionKey | None = Field(
        None, description=f"Key that encrypts the secrets: exactly {ENCRYPTION_KEY_BYTES} bytes."
    )


class SecretStoreSettings(_Section):
    engine: Engine = Field("sqlite", description='Database of the secrets: "sqlite" or "postgres".')
    sqlite: SecretStoreSqlite = Field(
        default_factory=SecretStoreSqlite, description="The SQLite secret database."
    )
    postgres: SecretStorePostgres = Field(
        default_factory=SecretStorePostgres, description="The PostgreSQL secret database."
    )

    @property
    def encryption_key(self) -> SecretStr | None:
        """The key of the engine in use."""
        return self.postgres.encryption_key if self.engine == "postgres" else self.sqlite.encryption_key

    @model_validator(mode="after")
    def _engine_configured(self) -> Self:
        if self.engine == "postgres" and not self.postgres.url:
            raise LocatedError(
                ("engine",),
                'is "postgres" but secret_store.postgres.url is not set; set it or use engine "sqlite"',
            )
        return self


class ServerSettings(_Section):
    storage_engine: Engine = Field(
        "sqlite", description='Database of the event log and runs: "sqlite" or "postgres".'
    )
    storage_path: Path = Field(
        Path("objstore-data/objstore.db"), description="SQLite database of the event log and runs."
    )
    postgres: PostgresSettings = Field(
        default_factory=PostgresSettings, description="The PostgreSQL event log and runs database."
    )

    @model_validator(mode="after")
    def _engine_configured(self) -> Self:
        if self.storage_engine == "postgres" and not self.postgres.url:
            raise LocatedError(
                ("storage_engine",),
                'is "postgres" but server.postgres.url is not set; set it or use storage_engine "sqlite"',
            )
        return self


class DevelopmentSettings(_Section):
    default_encryption: bool = Field(
        False,
        description=f"Allow the well-known default encryption key {DEFAULT_ENCRYPTION_KEY!r}. Never in "
        "production: anyone can decrypt the secrets.",
    )
    pretty_logging: bool = Field(False, description="Human-readable log lines instead of JSON.")


def env_var_name(path: Iterable[str]) -> str:
    """The environment variable of a setting: ``("api", "log_dir")`` -> ``OBJSTORE_API__LOG_DIR``."""
    return ENV_PREFIX + "__".join(part.upper() for part in path)


class Settings(BaseSettings):
    """All of objstore's settings. Build with :meth:`load` (or :meth:`for_directory` in tests)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        hide_input_in_errors=True,
        validate_default=True,
    )

    api: ApiSettings = Field(default_factory=ApiSettings, description="Event log and task execution logs.")
    object_store: ObjectStoreSettings = Field(
        default_factory=ObjectStoreSettings, description="Pipeline objects and run objects."
    )
    secret_store: SecretStoreSettings = Field(
        default_factory=SecretStoreSettings, description="Encrypted secrets of pipelines and global secrets."
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="Event log and runs database.")
    scheduler: SchedulerSettings = Field(
        default_factory=SchedulerSettings,
        description="The pruning scheduler (events, expired run data, unreferenced blobs). The host "
        "application may keep its own keys in this section ([scheduler] engine, docker, ...): objstore "
        "leaves them alone.",
    )
    development: DevelopmentSettings = Field(
        default_factory=DevelopmentSettings, description="Development switches; keep them off in production."
    )
    blobs: BlobSettings = Field(
        default_factory=BlobSettings, description="Content-addressed storage of large values."
    )

    _config_file: Path | None = PrivateAttr(None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load() has read the environment itself (to name variables in errors) and passes the result in.
        if _LOADING_FROM.get() is not None:
            return (init_settings,)
        return init_settings, env_settings

    @model_validator(mode="after")
    def _finish(self) -> Self:
        _resolve_paths(self, _LOADING_FROM.get() or Path.cwd())
        return self

    def vault_key(self) -> SecretStr:
        """The encryption key the secret store may use, or a VaultError saying how to set one.

        The well-known default key does not stop the configuration from loading (Gofer's example ships
        it, and objects need no key); it is refused here, when secrets are used, unless
        ``development.default_encryption`` allows it.
        """
        key = self.secret_store.encryption_key
        setting = f"secret_store.{self.secret_store.engine}.encryption_key"
        if key is None:
            raise VaultError(
                f"no encryption key is configured, so secrets cannot be stored or read; set {setting} "
                f"(or {env_var_name(('secret_store', self.secret_store.engine, 'encryption_key'))}): "
                f"{_MAKE_KEY_HINT}"
            )
        if key.get_secret_value() == DEFAULT_ENCRYPTION_KEY and not self.development.default_encryption:
            raise VaultError(
                f"{setting} is the well-known default key that anyone can look up; {_MAKE_KEY_HINT} "
                "(or, for development only, set development.default_encryption = true)"
            )
        return key

    @property
    def config_file(self) -> Path | None:
        """The configuration file these settings were read from (absolute), or None."""
        return self._config_file

    def blob_stores(self) -> list[BlobStore]:
        """The blob stores in use: the configured ones, else a filesystem store beside the object database."""
        if self.blobs.stores:
            return list(self.blobs.stores)
        return [FilesystemBlobStore(path=self.object_store.sqlite.path.parent / "blobs")]

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> Self:
        """Read settings: defaults < the TOML file < ``OBJSTORE_*`` environment variables < ``overrides``.

        ``path`` None means ``$OBJSTORE_CONFIG`` if set, else no file. ``overrides`` are sections as
        (partial) dicts, merged deeply: ``load(p, object_store={"sqlite": {"path": "o.db"}})``. Relative paths
        resolve against the file's folder, or the working folder without a file. Raises :class:`ConfigError`.
        """
        origin = "the path given to Settings.load"
        if path is None and os.environ.get(CONFIG_ENV_VAR):
            path, origin = os.environ[CONFIG_ENV_VAR], f"environment variable {CONFIG_ENV_VAR}"
        file = None if path is None else Path(os.path.abspath(Path(path).expanduser()))
        return cls._build(file, origin, plain_overrides(overrides), None)

    @classmethod
    def for_directory(cls, path: str | os.PathLike[str], **overrides: Any) -> Self:
        """Settings keeping all data under ``path``: objects.db, secrets.db, objstore.db, task-logs/, blobs/.

        No configuration file is read (not even ``$OBJSTORE_CONFIG``); environment variables apply, below
        ``overrides``. Relative paths in ``overrides`` resolve against ``path``.
        """
        root = Path(os.path.abspath(Path(path).expanduser()))
        layout: dict[str, Any] = {
            "api": {"task_execution_logs_dir": root / "task-logs"},
            "object_store": {"sqlite": {"path": root / "objects.db"}},
            "secret_store": {"sqlite": {"path": root / "secrets.db"}},
            "server": {"storage_path": root / "objstore.db"},
        }
        return cls._build(None, "", deep_merge(layout, plain_overrides(overrides)), root)

    @classmethod
    def _build(cls, file: Path | None, origin: str, overrides: dict[str, Any], base: Path | None) -> Self:
        sources = read_sources(file, origin, overrides, os.environ, _SHAPE)
        base_dir = base or (file.parent if file is not None else Path.cwd())
        # A context variable, not pydantic's validation context: BaseSettings validates through __init__,
        # which takes no context.
        loading = _LOADING_FROM.set(base_dir)
        try:
            settings = cls(**sources.merged())
        except ValidationError as exc:
            problems = validation_problems(exc, sources.labelled(), sources.env_vars, STORE_TYPES)
        else:
            settings._config_file = file
            return settings
        finally:
            _LOADING_FROM.reset(loading)
        # Raised outside the except block, so no ValidationError (holding the inputs) is chained to it.
        raise ConfigError(join_problems(problems))


def _resolve_paths(model: BaseModel, base: Path) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path):
            value = value.expanduser()
            setattr(model, name, value if value.is_absolute() else Path(os.path.abspath(base / value)))
        elif isinstance(value, BaseModel):
            _resolve_paths(value, base)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    _resolve_paths(item, base)


# What reading the sources needs to know about the models above (config_sources cannot import this module).
_SHAPE = SettingsShape(
    model=Settings,
    store_list=(BlobSettings, "stores"),
    store_types=STORE_TYPES,
    host_sections=HOST_SECTIONS,
    host_keys=HOST_KEYS,
    shared_sections=SHARED_SECTIONS,
    env_var_name=env_var_name,
    env_prefix=ENV_PREFIX,
    env_not_settings=frozenset({CONFIG_ENV_VAR, NEW_KEY_ENV_VAR, DEBUG_ENV_VAR}),
    env_not_settings_prefix=_TEST_ENV_PREFIX,
)
