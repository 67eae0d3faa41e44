"""The handles a caller holds: a pipeline, a run, and the objects of either."""

from __future__ import annotations

from typing import BinaryIO

from objstore.names import validate_key, validate_run_number
from objstore.secret_handles import PipelineSecrets
from objstore.stores.content import Source
from objstore.stores.objects import PIPELINE_SCOPE, ObjectStore
from objstore.stores.runs import RunStore
from objstore.stores.secrets import SecretStore
from objstore.types import ObjectInfo, RunInfo

__all__ = ["Objects", "Pipeline", "Run"]


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
    """One run of a pipeline: its number and its objects."""

    __slots__ = ("info", "objects")

    def __init__(self, info: RunInfo, objects: Objects) -> None:
        self.info = info
        self.objects = objects

    @property
    def number(self) -> int:
        return self.info.number

    def __repr__(self) -> str:
        return f"<Run {self.info.namespace}/{self.info.pipeline} #{self.info.number}>"


class Pipeline:
    """A (namespace, pipeline) handle: its objects and runs. Creating one does no I/O."""

    __slots__ = ("_objects", "_runs", "namespace", "objects", "pipeline", "secrets")

    def __init__(
        self, objects: ObjectStore, runs: RunStore, secrets: SecretStore, namespace: str, pipeline: str
    ) -> None:
        self._objects = objects
        self._runs = runs
        self.namespace = namespace
        self.pipeline = pipeline
        self.objects = Objects(objects, namespace, pipeline, PIPELINE_SCOPE)
        self.secrets = PipelineSecrets(secrets, namespace, pipeline)

    def start_run(self) -> Run:
        """Allocate the next run number atomically, then expire the run objects that run makes old."""
        info = self._runs.start(self.namespace, self.pipeline)
        self._objects.expire_runs(self.namespace, self.pipeline, info.number)
        return self._run_handle(info)

    def run(self, number: int) -> Run:
        """A handle on an existing run. Raises ``RunNotFound``."""
        return self._run_handle(self._runs.get(self.namespace, self.pipeline, validate_run_number(number)))

    def runs(self) -> list[RunInfo]:
        """Every run of this pipeline, oldest first."""
        return self._runs.all_runs(self.namespace, self.pipeline)

    @property
    def latest_run(self) -> int:
        """The newest run number, 0 if the pipeline has never run."""
        return self._runs.latest(self.namespace, self.pipeline)

    def _run_handle(self, info: RunInfo) -> Run:
        return Run(info, Objects(self._objects, self.namespace, self.pipeline, info.number))

    def __repr__(self) -> str:
        return f"<Pipeline {self.namespace}/{self.pipeline}>"
