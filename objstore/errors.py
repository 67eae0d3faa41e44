"""The one exception tree of objstore.

Every error a caller can see derives from :class:`ObjStoreError`. Driver errors (sqlite3, SQLAlchemy,
OS, S3) are translated into this tree in exactly two places: the database layer (``objstore.db``) and
the blob backends (``objstore.blobs``). Messages say what was wrong and what to do; they never contain a
secret value or an encryption key.

::

    ObjStoreError
    ├── ConfigError              bad or missing configuration
    ├── InvalidName              a namespace, pipeline, key or secret name that is not allowed
    ├── InvalidValue             a value of the wrong type or size
    ├── NotFound
    │   ├── ObjectNotFound
    │   ├── SecretNotFound
    │   ├── RunNotFound
    │   └── TaskLogNotFound
    ├── AlreadyExists            put of an existing key or name without overwrite=True
    ├── RunExpired               put into a run whose objects (or task logs) have expired
    ├── IntegrityError           stored bytes do not match their sha256, or rows point at missing content
    ├── VaultError               the secret store cannot be used as configured
    │   └── WrongEncryptionKey   the configured key does not open the stored secrets
    ├── StorageBusy              the database stayed locked past the retry policy
    ├── StorageError             the database or blob store failed (disk full, permissions, I/O)
    │   └── SchemaError          the database schema is older or newer than this code
    └── (nothing else)
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "ConfigError",
    "IntegrityError",
    "InvalidName",
    "InvalidValue",
    "NotFound",
    "ObjStoreError",
    "ObjectNotFound",
    "RunExpired",
    "RunNotFound",
    "SchemaError",
    "SecretNotFound",
    "StorageBusy",
    "StorageError",
    "TaskLogNotFound",
    "VaultError",
    "WrongEncryptionKey",
]


class ObjStoreError(Exception):
    """Base class of every error objstore raises on purpose."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigError(ObjStoreError):
    """The configuration file, an environment override or an argument is invalid."""


class InvalidName(ObjStoreError, ValueError):
    """A namespace, pipeline id, object key or secret name does not follow the naming rules."""


class InvalidValue(ObjStoreError, ValueError):
    """A value has the wrong type or size."""


class NotFound(ObjStoreError, LookupError):
    """The thing asked for does not exist."""


class ObjectNotFound(NotFound):
    """No object is stored under that key in that scope."""


class SecretNotFound(NotFound):
    """No secret of that name exists in that scope."""


class RunNotFound(NotFound):
    """The pipeline has no run of that number."""


class TaskLogNotFound(NotFound):
    """Nothing was written to that task's log, or the run's logs have expired."""


class AlreadyExists(ObjStoreError):
    """A put of an existing key or name without ``overwrite=True``."""


class RunExpired(ObjStoreError):
    """The run's objects or task logs have expired (``object_store.run_object_expiry`` or
    ``api.task_execution_log_expiry`` runs have started since)."""


class IntegrityError(ObjStoreError):
    """Stored bytes do not match their recorded sha256 or size, or a row points at missing content."""


class VaultError(ObjStoreError):
    """The secret store cannot be used as configured (no key, bad key, undecryptable record)."""


class WrongEncryptionKey(VaultError):
    """The configured encryption key does not open the secrets already stored."""


class StorageBusy(ObjStoreError):
    """The database stayed locked by other writers for longer than the retry policy allows."""


class StorageError(ObjStoreError, OSError):
    """The database or the blob store failed: disk full, permission denied, I/O error."""


class SchemaError(StorageError):
    """The database schema does not match this version of objstore (older or newer)."""
