"""The facade: ``ObjStore`` reads the settings and wires the databases, blob store and stores together.

This is the only module that reads :class:`~objstore.config.Settings`; everything below it receives plain
values (paths, limits, a clock).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from objstore.blobs.base import BlobBackend
from objstore.blobs.migrate import MigrationReport
from objstore.clock import Clock, SystemClock
from objstore.config import DEFAULT_ENCRYPTION_KEY, PLACEHOLDER_KEY, Settings
from objstore.db.database import Database
from objstore.db.migrate import SchemaStatus, ensure_schema, schema_status, upgrade
from objstore.db.postgres import PostgresDatabase
from objstore.db.sqlite_database import SqliteDatabase
from objstore.engine_blobs import build_blob_backend
from objstore.errors import InvalidValue, ObjStoreError, VaultError
from objstore.handles import Events, Pipeline, Stores
from objstore.masking import Masker
from objstore.names import validate_id
from objstore.pruner import Pruner
from objstore.retention import RetentionJobs, RunDataExpiry
from objstore.secret_handles import GlobalSecrets
from objstore.stats import collect_stats
from objstore.stores.content import ContentStore
from objstore.stores.events import EventStore
from objstore.stores.leases import Leases
from objstore.stores.maintenance import Maintenance
from objstore.stores.notices import NoticeWriter
from objstore.stores.objects import ObjectStore
from objstore.stores.rotation import rotate_data_key, rotate_encryption_key
from objstore.stores.runs import RunStore
from objstore.stores.secrets import SecretStore, open_keyring
from objstore.stores.task_logs import TaskLogStore
from objstore.types import CheckReport, GCReport, PruneReport, StoreStats
from objstore.urls import mask_password

if TYPE_CHECKING:
    from objstore.keyring import Keyring
    from objstore.scheduler import PruneScheduler

__all__ = ["ObjStore", "open"]


class ObjStore:
    """An open objstore: pipelines, runs and their objects over SQLite and a blob store.

    Thread-safe: one instance may be shared by many threads (each uses its own database connection).
    Several processes may open the same databases at once. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self, settings: Settings | None = None, *, clock: Clock | None = None, upgrade_schema: bool = True
    ) -> None:
        """Open the databases and blob store that ``settings`` describe (default: ``Settings.load()``).

        With ``upgrade_schema`` (the default) an empty database is created and an older one upgraded;
        without it nothing is written at open, and :meth:`schema_status` tells where each one stands.
        """
        self._upgrade_schema = upgrade_schema
        self.settings = settings if settings is not None else Settings.load()
        self.clock: Clock = clock or SystemClock()
        self._closed = False
        self._close_lock = threading.Lock()
        self._databases: dict[str, Database] = {}
        self._scheduler: PruneScheduler | None = None
        # The key that opens the vault now (rotate_encryption_key changes it); SecretStr: never shown.
        self._encryption_key: SecretStr | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        settings = self.settings
        self.server_db = self._database(
            "server database",
            settings.server.storage_engine,
            settings.server.storage_path,
            settings.server.postgres.url,
        )
        self.object_db = self._database(
            "object database",
            settings.object_store.engine,
            settings.object_store.sqlite.path,
            settings.object_store.postgres.url,
        )
        self.secret_db = self._database(
            "secret database",
            settings.secret_store.engine,
            settings.secret_store.sqlite.path,
            settings.secret_store.postgres.url,
        )
        if self._upgrade_schema:
            for database in self._databases.values():
                ensure_schema(database, auto_upgrade=True)  # PostgreSQL: checked, never changed here
        self.blob_stores = build_blob_backend(settings)
        self.blob_backend = self.blob_stores.backend
        self.content = ContentStore(self.blob_backend, threshold=settings.blobs.threshold)
        self.event_store = EventStore(self.server_db, clock=self.clock)
        self.notices = NoticeWriter(self.event_store)
        self.event_store.flush_pending = self.notices.flush
        notify = self.notices
        self.objects = ObjectStore(
            self.object_db,
            self.content,
            clock=self.clock,
            pipeline_object_limit=settings.object_store.pipeline_object_limit,
            run_object_expiry=settings.object_store.run_object_expiry,
            notify=notify,
            events=self.event_store if self.server_db is self.object_db else None,
        )
        self.runs = RunStore(self.server_db, clock=self.clock, events=self.event_store)
        self.task_logs = TaskLogStore(
            settings.api.task_execution_logs_dir,
            expiry=settings.api.task_execution_log_expiry,
            latest_run=self.runs.latest,
            clock=self.clock,
        )
        self.maintenance = Maintenance(self.object_db, self.content)
        self.secrets = self._open_vault()
        self.secrets.notify = notify
        self.global_secrets = GlobalSecrets(self.secrets)
        self.events = Events(self.event_store)
        expiry = RunDataExpiry(self.objects, self.task_logs, self.event_store)
        self._stores = Stores(self.objects, self.runs, self.secrets, self.task_logs, expiry)
        jobs = RetentionJobs(
            events=self.event_store,
            runs=self.runs,
            expiry=expiry,
            maintenance=self.maintenance,
            clock=self.clock,
            event_retention=settings.api.event_log_retention,
            gc_grace=lambda: self.settings.blobs.gc_grace_period,
        )
        self.pruner = Pruner(
            jobs.jobs(),
            leases=Leases(self.server_db, clock=self.clock),
            events=self.event_store,
            clock=self.clock,
            lease_ttl=settings.scheduler.lease_ttl,
        )

    def _open_vault(self) -> SecretStore:
        # Without a usable key, objects keep working and secret calls raise the VaultError that says
        # how to set one. A key that does not open the stored secrets fails here, at open.
        try:
            key = self.settings.vault_key()
        except VaultError as unavailable:
            return SecretStore(self.secret_db, None, clock=self.clock, unavailable=unavailable)
        if not self._upgrade_schema and not schema_status(self.secret_db).up_to_date:
            return SecretStore(
                self.secret_db,
                None,
                clock=self.clock,
                unavailable=VaultError("run `objstore db upgrade` first"),
            )
        self._encryption_key = key
        keyring = self._read_keyring()
        return SecretStore(self.secret_db, keyring, clock=self.clock, reload_keyring=self._read_keyring)

    def _read_keyring(self) -> Keyring:
        """The vault's data keys as stored now (another process may have rotated them)."""
        if self._encryption_key is None:
            raise VaultError("the secret store has no encryption key")
        return open_keyring(self.secret_db, self._encryption_key.get_secret_value(), clock=self.clock)

    def _database(self, role: str, engine: str, path: Path, url: str | None) -> Database:
        # The three databases may be one: share one Database (and one set of connections) then.
        key = f"postgres:{url}" if engine == "postgres" else os.path.realpath(path)
        existing = self._databases.get(key)
        if existing is not None:
            existing.label = existing.label.replace(" database ", f" and {role} ", 1)
            return existing
        database: Database
        if engine == "postgres":
            assert url is not None  # the settings refuse engine "postgres" without a URL
            database = PostgresDatabase(url, label=f"{role} {mask_password(url)}")
        else:
            database = SqliteDatabase(Path(path), label=f"{role} {path}")
        self._databases[key] = database
        return database

    # -- the public face -------------------------------------------------------------------------------

    def pipeline(self, namespace: str, pipeline: str) -> Pipeline:
        """A handle on one pipeline; the ids are validated, nothing is read or written."""
        self._check_open()
        return Pipeline(
            self._stores, validate_id(namespace, "namespace"), validate_id(pipeline, "pipeline id")
        )

    def mask(self, text: str, *, namespace: str | None = None, pipeline: str | None = None) -> str:
        """``text`` with every secret value replaced by ``****`` (values shorter than 4 characters are not
        masked). With ``namespace`` and ``pipeline``: that pipeline's secrets and the global secrets its
        namespace may read; otherwise every secret in the vault."""
        self._check_open()
        if (namespace is None) != (pipeline is None):
            raise InvalidValue("mask() takes both namespace and pipeline, or neither")
        if namespace is not None and pipeline is not None:
            validate_id(namespace, "namespace")
            validate_id(pipeline, "pipeline id")
        return Masker(self.secrets.values(namespace, pipeline)).mask_text(text)

    def expire_run_objects(self, *, dry_run: bool = False) -> int:
        """The sweep behind run-object expiry: every pipeline's runs at or below latest - expiry.

        ``start_run`` does this for its own pipeline; the sweep catches what a crash or a lowered
        ``run_object_expiry`` left behind. Returns how many objects were (or would be) removed.
        """
        self._check_open()
        removed = 0
        for namespace, pipeline, last_run in self.runs.pipelines():
            removed += self.objects.expire_runs(namespace, pipeline, last_run, dry_run=dry_run)
        return removed

    def collect_garbage(
        self,
        grace: timedelta | None = None,
        *,
        staging_grace: timedelta | None = None,
        dry_run: bool = False,
    ) -> GCReport:
        """Remove blob content no object refers to, older than ``grace`` (default: the setting
        ``blobs.gc_grace_period``); see :meth:`Maintenance.collect_garbage`."""
        self._check_open()
        return self.maintenance.collect_garbage(
            self.settings.blobs.gc_grace_period if grace is None else grace,
            staging_grace=staging_grace,
            dry_run=dry_run,
        )

    def migrate_blobs(self, to: str, *, progress: Callable[[int], None] | None = None) -> MigrationReport:
        """Copy into blob store ``to`` (its ``name``, or its position in ``[[blobs.stores]]`` from 1) every
        blob the other stores hold and it lacks, each copy verified against its sha256. Resumable: run it
        again after an interruption. Put the target first in the list to write new content there."""
        self._check_open()
        return self.blob_stores.migrate_to(to, progress=progress)

    def check(self, *, fix: bool = False, verify: bool = False) -> CheckReport:
        """Objects whose content is missing (or corrupt, with ``verify``) and content no object uses."""
        self._check_open()
        return self.maintenance.check(fix=fix, verify=verify)

    def prune(self, *, dry_run: bool = False) -> PruneReport:
        """Run every retention job once and report what each removed (or would remove, with ``dry_run``):

        events older than ``api.event_log_retention``; run objects and task logs of expired runs in every
        pipeline, and objects over the pipeline limit; then blob content no object uses (past
        ``blobs.gc_grace_period``). A job that another process is running (it holds the job's lease) is
        skipped and named in ``report.skipped``.
        """
        self._check_open()
        return self.pruner.run_all(dry_run=dry_run)

    def start_scheduler(self) -> PruneScheduler | None:
        """Run the pruning jobs in a background thread: events every ``api.event_prune_interval``, the
        others every ``scheduler.prune_interval``; each also runs once now. None (and nothing started)
        when ``scheduler.enabled`` is false. :meth:`close` stops it."""
        self._check_open()
        if not self.settings.scheduler.enabled:
            return None
        if self._scheduler is None:
            from objstore.scheduler import PruneScheduler

            interval = self.settings.scheduler.prune_interval
            self._scheduler = PruneScheduler(
                self.pruner,
                intervals={
                    "events": self.settings.api.event_prune_interval,
                    "expiry": interval,
                    "blobs": interval,
                },
                misfire_grace_time=self.settings.scheduler.misfire_grace_time,
            )
            self._scheduler.start()
        return self._scheduler

    def stats(self) -> StoreStats:
        """Counts and bytes of every store: objects, blobs, secrets, events, task logs, database files."""
        self._check_open()
        return collect_stats(
            objects=self.objects,
            runs=self.runs,
            secrets=self.secrets,
            events=self.event_store,
            task_logs=self.task_logs,
            blobs=self.blob_backend,
            databases=list(self._databases.values()),
        )

    def rotate_encryption_key(self, new_key: str) -> bool:
        """Re-wrap the vault's data keys with ``new_key`` (then configure it); False if already done.

        One transaction: interrupted, the configured key still opens everything; run again, it completes
        (or finds nothing to do). Afterwards the old key is refused at open.
        """
        self._check_open()
        if new_key == PLACEHOLDER_KEY or (
            new_key == DEFAULT_ENCRYPTION_KEY and not self.settings.development.default_encryption
        ):
            raise VaultError(
                "the new encryption key is the sample configuration's placeholder or the well-known default "
                "key; create a real one with `objstore init-config` or "
                '`python -c "import secrets; print(secrets.token_urlsafe(24))"`'
            )
        current = self._encryption_key or self.settings.vault_key()
        rotated = rotate_encryption_key(self.secret_db, current.get_secret_value(), new_key)
        self._encryption_key = SecretStr(new_key)
        self.secrets.use_keyring(self._read_keyring())
        return rotated

    def rotate_data_key(self, *, batch_size: int = 500) -> int:
        """Seal every secret with a fresh data key, in batches; how many were resealed. Resumable."""
        self._check_open()
        self.secrets.keyring  # noqa: B018 - raises the VaultError that says how to configure a key
        assert self._encryption_key is not None  # a keyring was opened with it
        ring, moved = rotate_data_key(
            self.secret_db,
            self._encryption_key.get_secret_value(),
            clock=self.clock,
            batch_size=batch_size,
        )
        self.secrets.use_keyring(ring)
        return moved

    def schema_status(self) -> list[SchemaStatus]:
        """Where each database's schema stands."""
        return [schema_status(database) for database in self._databases.values()]

    def upgrade(self) -> list[SchemaStatus]:
        """Apply missing migrations to every database."""
        return [upgrade(database) for database in self._databases.values()]

    def close(self) -> None:
        """Close connections and backends; closing twice is harmless."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        scheduler, self._scheduler = getattr(self, "_scheduler", None), None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        notices: NoticeWriter | None = getattr(self, "notices", None)
        if notices is not None:
            notices.close()  # before the databases: it writes what is pending
        for database in self._databases.values():
            database.close()
        backend: BlobBackend | None = getattr(self, "blob_backend", None)
        if backend is not None:
            backend.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ObjStoreError("this store is closed; open a new one with objstore.open()")

    def __enter__(self) -> ObjStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:  # settings and keys are never shown
        state = "closed" if self._closed else "open"
        return f"<ObjStore {state} objects={self.settings.object_store.sqlite.path}>"


def open(  # the natural name: objstore.open(...)
    config: str | os.PathLike[str] | None = None,
    /,
    *,
    clock: Clock | None = None,
    upgrade_schema: bool = True,
    **overrides: Any,
) -> ObjStore:
    """Open the store described by ``config`` (a TOML file; None: ``$OBJSTORE_CONFIG``, else defaults).

    Environment overrides apply; keyword ``overrides`` win over both, e.g.
    ``objstore.open(None, object_store={"pipeline_object_limit": 10})``.
    """
    return ObjStore(Settings.load(config, **overrides), clock=clock, upgrade_schema=upgrade_schema)
