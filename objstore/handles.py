"""The handles a caller holds: a pipeline, a run, the objects of either, a run's task logs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from objstore.masking import Masker
from objstore.names import validate_id, validate_key, validate_run_number
from objstore.retention import RunDataExpiry
from objstore.secret_handles import PipelineSecrets
from objstore.stores.content import Source
from objstore.stores.events import EventStore
from objstore.stores.objects import PIPELINE_SCOPE, ObjectStore
from objstore.stores.runs import RunStore
from objstore.stores.secrets import SecretStore
from objstore.stores.task_logs import TaskLog, TaskLogStore
from objstore.types import Event, ObjectInfo, RunInfo

__all__ = ["Events", "Objects", "Pipeline", "Run", "Stores"]


@dataclass(frozen=True, slots=True)
class Stores:
    """What the handles work on; one per open ObjStore."""

    objects: ObjectStore
    runs: RunStore
    secrets: SecretStore
    task_logs: TaskLogStore
    expiry: RunDataExpiry


class Objects:
    """The objects of one pipeline (``pipe.objects``) or of one run (``run.objects``)."""

    __slots__ = ("_namespace", "_pipeline", "_run", "_store")

    def __init__(self, store: ObjectStore, namespace: str, pipeline: str, run: int) -> None:
        self._store = store
        self._namespace = namespace
        self._pipeline = pipeline
        self._run = run

    def put(
        self, key: str, data: Source, *, overwrite: bool = False, content_type: str | None = None
    ) -> ObjectInfo:
        """Store ``data`` (bytes, or a binary file object that is streamed) under ``key``.

        Raises ``InvalidName`` for a bad key, ``AlreadyExists`` if the key exists and ``overwrite`` is
        False, ``RunExpired`` for a run whose objects have expired. Storing a pipeline object beyond
        ``object_store.pipeline_object_limit`` removes the oldest ones in the same transaction.
        """
        return self._store.put(
            self._namespace,
            self._pipeline,
            self._run,
            validate_key(key),
            data,
            overwrite=overwrite,
            content_type=content_type,
        )

    def get(self, key: str) -> bytes:
        """The whole value, verified. Raises ``ObjectNotFound``, ``InvalidName`` or ``IntegrityError``."""
        if type(key) is not str:
            validate_key(key)  # raises: only strings can name objects
        # Every stored key was validated when it was put: look first, and validate only a miss.
        return self._store.get(self._namespace, self._pipeline, self._run, key, validate=validate_key)

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream over the value; raises ``IntegrityError`` at EOF if it is damaged."""
        return self._store.open(self._namespace, self._pipeline, self._run, validate_key(key))

    def info(self, key: str) -> ObjectInfo:
        """Metadata of one object. Raises ``ObjectNotFound``."""
        return self._store.info(self._namespace, self._pipeline, self._run, validate_key(key))

    def list(self) -> list[ObjectInfo]:
        """Every object in this scope, oldest first."""
        return self._store.list(self._namespace, self._pipeline, self._run)

    def delete(self, key: str) -> None:
        """Remove one object. Raises ``ObjectNotFound``."""
        self._store.delete(self._namespace, self._pipeline, self._run, validate_key(key))

    def __contains__(self, key: object) -> bool:
        try:
            self.info(validate_key(key))
        except LookupError:
            return False
        return True

    def __repr__(self) -> str:
        where = f"{self._namespace}/{self._pipeline}"
        return (
            f"<Objects of {where}>"
            if self._run == PIPELINE_SCOPE
            else f"<Objects of {where} run {self._run}>"
        )


class Run:
    """One run of a pipeline: its number, its objects and its tasks' logs."""

    __slots__ = ("_stores", "info", "objects")

    def __init__(self, info: RunInfo, stores: Stores) -> None:
        self.info = info
        self._stores = stores
        self.objects = Objects(stores.objects, info.namespace, info.pipeline, info.number)

    @property
    def number(self) -> int:
        return self.info.number

    def task_log(self, task: str, *, mask_secrets: bool = False) -> TaskLog:
        """The execution log of ``task`` in this run (a task id: 1-64 of letters, digits, '_', '-').

        ``log.write(...)`` appends, ``log.read()`` / ``log.stream(follow=True)`` read, ``log.finish()``
        (or leaving ``with log:``) marks it done. With ``mask_secrets``, the values of this pipeline's
        secrets (and the global secrets its namespace may read) are written as ``****``; that needs the
        vault's key.
        """
        validate_id(task, "task id")
        info = self.info
        masker = None
        if mask_secrets:
            masker = Masker(self._stores.secrets.values(info.namespace, info.pipeline))
        return self._stores.task_logs.log(info.namespace, info.pipeline, info.number, task, masker=masker)

    def task_logs(self) -> list[str]:
        """The tasks of this run that have a log, by name."""
        info = self.info
        return self._stores.task_logs.tasks(info.namespace, info.pipeline, info.number)

    def __repr__(self) -> str:
        return f"<Run {self.info.namespace}/{self.info.pipeline} #{self.info.number}>"


class Pipeline:
    """A (namespace, pipeline) handle: its objects, runs and secrets. Creating one does no I/O."""

    __slots__ = ("_stores", "namespace", "objects", "pipeline", "secrets")

    def __init__(self, stores: Stores, namespace: str, pipeline: str) -> None:
        self._stores = stores
        self.namespace = namespace
        self.pipeline = pipeline
        self.objects = Objects(stores.objects, namespace, pipeline, PIPELINE_SCOPE)
        self.secrets = PipelineSecrets(stores.secrets, namespace, pipeline)

    def start_run(self) -> Run:
        """Allocate the next run number atomically, then expire the run objects and task logs that run
        makes old (every run at or below the new number minus the expiry)."""
        info = self._stores.runs.start(self.namespace, self.pipeline)
        self._stores.expiry.expire(self.namespace, self.pipeline, info.number)
        return Run(info, self._stores)

    def run(self, number: int) -> Run:
        """A handle on an existing run. Raises ``RunNotFound``."""
        info = self._stores.runs.get(self.namespace, self.pipeline, validate_run_number(number))
        return Run(info, self._stores)

    def runs(self) -> list[RunInfo]:
        """Every run of this pipeline, oldest first."""
        return self._stores.runs.all_runs(self.namespace, self.pipeline)

    @property
    def latest_run(self) -> int:
        """The newest run number, 0 if the pipeline has never run."""
        return self._stores.runs.latest(self.namespace, self.pipeline)

    def __repr__(self) -> str:
        return f"<Pipeline {self.namespace}/{self.pipeline}>"


class Events:
    """The event log (``store.events``): what happened, newest last. The engine records its own actions
    (object_evicted, run_started, run_data_expired, secret_written, secret_deleted, prune_finished);
    the host adds its own with :meth:`emit`."""

    __slots__ = ("_store",)

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def emit(
        self,
        kind: str,
        details: Mapping[str, Any] | None = None,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        run: int | None = None,
    ) -> Event:
        """Append an event: ``kind`` (1-64 of letters, digits, '_', '.', ':', '-'), ``details`` a dict of
        JSON values (at most 64 KiB as JSON), optionally the namespace / pipeline / run it concerns.
        Raises ``InvalidName`` or ``InvalidValue`` and records nothing when one of them is wrong."""
        return self._store.emit(kind, details, namespace=namespace, pipeline=pipeline, run=run)

    def list(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
        kind: str | None = None,
        namespace: str | None = None,
        pipeline: str | None = None,
    ) -> list[Event]:
        """Events, oldest first. ``after=id``: the ``limit`` events that follow (page forward; pass the
        last id seen to follow the log). Otherwise the newest ``limit``, before ``before=id`` if given
        (page backward). Filters: ``kind``; ``namespace`` and ``pipeline``."""
        return self._store.list(
            after=after, before=before, limit=limit, kind=kind, namespace=namespace, pipeline=pipeline
        )

    def __repr__(self) -> str:
        return "<Events>"
