"""objstore: the storage engine a CI orchestrator embeds.

Pipeline objects (artifacts shared by every run of a pipeline, kept up to a count limit), run objects
(artifacts of one run, expired a fixed number of runs later), an encrypted secret vault, an event log and
task execution logs pruned on a schedule; in SQLite by default with large content in a content-addressed
blob store.

>>> import objstore
>>> with objstore.open("objstore.toml") as store:          # doctest: +SKIP
...     pipe = store.pipeline("default", "build-app")
...     pipe.objects.put("cache/deps.tar", b"...")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from objstore import errors
from objstore.clock import Clock, FakeClock, SystemClock
from objstore.errors import (
    AlreadyExists,
    ConfigError,
    IntegrityError,
    InvalidName,
    InvalidValue,
    NotFound,
    ObjectNotFound,
    ObjStoreError,
    RunExpired,
    RunNotFound,
    SchemaError,
    SecretNotFound,
    StorageBusy,
    StorageError,
    TaskLogNotFound,
    VaultError,
    WrongEncryptionKey,
)
from objstore.types import CheckReport, Event, GCReport, ObjectInfo, PruneReport, RunInfo, SecretInfo

if TYPE_CHECKING:
    from objstore.config import Settings
    from objstore.engine import ObjStore, open
    from objstore.handles import Events, Objects, Pipeline, Run
    from objstore.stores.task_logs import TaskLog

# The engine pulls in pydantic and the database layer: load it on first use, so that the command line's
# --help and the light submodules (errors, types) stay fast to import.
_LAZY = {
    "Settings": "objstore.config",
    "ObjStore": "objstore.engine",
    "open": "objstore.engine",
    "Objects": "objstore.handles",
    "Pipeline": "objstore.handles",
    "Run": "objstore.handles",
    "Events": "objstore.handles",
    "TaskLog": "objstore.stores.task_logs",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'objstore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "CheckReport",
    "Clock",
    "ConfigError",
    "Event",
    "Events",
    "FakeClock",
    "GCReport",
    "IntegrityError",
    "InvalidName",
    "InvalidValue",
    "NotFound",
    "ObjStore",
    "ObjStoreError",
    "ObjectInfo",
    "ObjectNotFound",
    "Objects",
    "Pipeline",
    "PruneReport",
    "Run",
    "RunExpired",
    "RunInfo",
    "RunNotFound",
    "SchemaError",
    "SecretInfo",
    "SecretNotFound",
    "Settings",
    "StorageBusy",
    "StorageError",
    "SystemClock",
    "TaskLog",
    "TaskLogNotFound",
    "VaultError",
    "WrongEncryptionKey",
    "__version__",
    "errors",
    "open",
]
