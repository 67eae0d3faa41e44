"""The secret vault: pipeline secrets and global secrets, sealed with AES-256-GCM.

Each value is sealed by the active data key of a keyring whose keys are wrapped by the configured key
(``objstore.crypto``, ``objstore.keyring``), with associated data binding it to its scope, namespace,
pipeline and name. Opening the vault unwraps the keyring: a wrong configured key fails there with
``WrongEncryptionKey``, before anything is written. Values never reach logs, reprs or error messages.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

from objstore.clock import Clock
from objstore.crypto import kek_from_setting, sealed_key_id, secret_aad
from objstore.db.database import Connection, Database
from objstore.errors import AlreadyExists, InvalidValue, SecretNotFound, VaultError
from objstore.keyring import Keyring
from objstore.stores.events import EventSink
from objstore.timestamps import from_micros, to_micros
from objstore.types import SecretInfo

__all__ = ["MAX_SECRET_BYTES", "Scope", "SecretStore", "open_keyring", "secret_aad_for", "unwrap_keyring"]

Scope = Literal["pipeline", "global"]
MAX_SECRET_BYTES = 64 * 1024
# Writers of secrets and of the keyring take this (PostgreSQL; SQLite's write lock already serialises them).
VAULT_LOCK = "vault"
_GLOBAL = ""  # namespace and pipeline columns of a global secret: never a valid id, so never a clash


def open_keyring(database: Database, encryption_key: str, *, clock: Clock) -> Keyring:
    """Unwrap the vault's data keys with the configured key; create the first one on a new vault.

    Raises ``WrongEncryptionKey`` (nothing written) when the key does not open the stored keys.
    """
    kek = kek_from_setting(encryption_key)
    select = database.sql("SELECT key_id, wrapped, active FROM vault_keys")
    insert = database.sql(
        "INSERT INTO vault_keys (key_id, wrapped, active, created_at) "
        "VALUES (:key_id, :wrapped, :active, :at)"
    )
    rows = database.query_all(select, {})
    if rows:
        return unwrap_keyring(kek, rows)

    def create(conn: Connection) -> Keyring:
        database.serialize(conn, VAULT_LOCK)
        existing = conn.execute(select, {}).fetchall()
        if existing:  # another process created the vault first
            return unwrap_keyring(kek, existing)
        ring = Keyring.generate()
        at = to_micros(clock.now())
        for key_id, wrapped in ring.wrap(kek).items():
            conn.execute(insert, {"key_id": key_id, "wrapped": wrapped, "active": True, "at": at})
        return ring

    return database.write(create)


def unwrap_keyring(kek: bytes, rows: Iterable[tuple[int, bytes, bool]]) -> Keyring:
    """The keyring held by the vault_keys rows; exactly one of them must be active."""
    rows = list(rows)
    active = [key_id for key_id, _, is_active in rows if is_active]
    if len(active) != 1:
        raise VaultError(
            "the vault's key records are inconsistent (not exactly one active key); restore a backup"
        )
    return Keyring.unwrap(kek, {key_id: wrapped for key_id, wrapped, _ in rows}, active[0])


def _as_bytes(value: object) -> tuple[bytes, bool]:
    if isinstance(value, str):
        try:
            return value.encode("utf-8"), True
        except UnicodeEncodeError:
            raise InvalidValue(
                "a secret given as str must be valid Unicode text; pass bytes instead"
            ) from None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), False
    raise InvalidValue(f"a secret value is str or bytes, not {type(value).__name__}")


class _KeyRetired(Exception):
    """Inside a put: the data key it sealed with is no longer in the vault (another process rotated)."""


class SecretStore:
    """Secrets of every pipeline, and global secrets, in the secret database.

    Several processes may share the vault. When another one rotates the data key, this store's keyring
    is out of date: a value sealed under a key it does not hold, or a put under a key that was retired,
    makes it read the keys again (``reload_keyring``) and try once more.
    """

    def __init__(
        self,
        database: Database,
        keyring: Keyring | None,
        *,
        clock: Clock,
        unavailable: VaultError | None = None,
        notify: EventSink | None = None,
        reload_keyring: Callable[[], Keyring] | None = None,
    ) -> None:
        self.db = database
        self._reload_keyring = reload_keyring
        self.notify = notify  # told of writes and deletes (names only, never values), after they commit
        self.clock = clock
        self._keyring = keyring
        self._unavailable = unavailable  # why there is no keyring (no key configured, default key, ...)
        sql = database.sql
        where = "scope = :scope AND namespace = :ns AND pipeline = :p AND name = :name"
        self._insert = sql(
            "INSERT INTO secrets (scope, namespace, pipeline, name, sealed, key_id, is_text, "
            "allowed_namespaces, created_at, updated_at) "
            "VALUES (:scope, :ns, :p, :name, :sealed, :key_id, :is_text, :allowed, :at, :at) "
            "ON CONFLICT (scope, namespace, pipeline, name) DO NOTHING"
        )
        self._update = sql(
            "UPDATE secrets SET sealed = :sealed, key_id = :key_id, is_text = :is_text, "
            f"allowed_namespaces = :allowed, updated_at = :at WHERE {where}"
        )
        self._key_is_active = sql("SELECT 1 FROM vault_keys WHERE key_id = :key_id AND active = TRUE")
        # The reads of a value, the hot path of a get, bind (scope, namespace, pipeline, name) positionally.
        by_name = "scope = ? AND namespace = ? AND pipeline = ? AND name = ?"
        self._get = sql(f"SELECT sealed, is_text, allowed_namespaces FROM secrets WHERE {by_name}")
        self._get_value = sql(f"SELECT sealed, is_text FROM secrets WHERE {by_name}")
        self._delete = sql(f"DELETE FROM secrets WHERE {where}")
        self._one_info = sql(f"SELECT name, created_at, updated_at FROM secrets WHERE {where}")
        self._list = sql(
            "SELECT name, created_at, updated_at FROM secrets "
            "WHERE scope = :scope AND namespace = :ns AND pipeline = :p ORDER BY name"
        )
        self._count_by_scope = sql("SELECT scope, count(*) FROM secrets GROUP BY scope")
        self._all = sql("SELECT scope, namespace, pipeline, name, sealed, allowed_namespaces FROM secrets")

    def counts(self) -> tuple[int, int]:
        """How many pipeline secrets and global secrets are stored (no key needed: nothing is opened)."""
        counts: dict[str, int] = {
            str(scope): int(n) for scope, n in self.db.query_all(self._count_by_scope, {})
        }
        return int(counts.get("pipeline", 0)), int(counts.get("global", 0))

    def use_keyring(self, keyring: Keyring) -> None:
        """After a rotation: seal and open with ``keyring`` from now on."""
        self._keyring = keyring

    def _newer_keyring(self, stale: Keyring) -> Keyring | None:
        """The vault's keys as stored now, if they changed since ``stale`` was read; else None."""
        if self._reload_keyring is None:
            return None
        ring = self._reload_keyring()
        if ring.key_ids == stale.key_ids and ring.active_id == stale.active_id:
            return None
        self._keyring = ring
        return ring

    def _unseal(self, ring: Keyring, sealed: bytes, aad: bytes) -> bytes:
        """Open ``sealed``; a key this keyring does not hold yet (a rotation elsewhere) reloads it."""
        try:
            return ring.unseal(sealed, aad)
        except VaultError as error:
            return self._unseal_with_newer_keys(ring, sealed, aad, error)

    def _unseal_with_newer_keys(self, ring: Keyring, sealed: bytes, aad: bytes, error: VaultError) -> bytes:
        """After ``ring`` failed to open ``sealed`` with ``error``: open it with the vault's current keys
        if it names a key ``ring`` lacks and those hold it; else raise ``error``."""
        key_id = None
        with contextlib.suppress(VaultError):
            key_id = sealed_key_id(sealed)
        if key_id is None or key_id in ring:
            raise error
        current = self._keyring  # another call may have read the newer keys already: no second read
        newer = current if current is not None and key_id in current else self._newer_keyring(ring)
        if newer is None:
            raise error
        return newer.unseal(sealed, aad)

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            raise self._unavailable or VaultError("the secret store is not configured")
        return self._keyring

    # -- writes -----------------------------------------------------------------------------------------

    def put(
        self,
        scope: Scope,
        namespace: str,
        pipeline: str,
        name: str,
        value: str | bytes,
        *,
        overwrite: bool = False,
        allowed_namespaces: list[str] | None = None,
    ) -> SecretInfo:
        """Seal and store ``value``; the name and the value commit together."""
        plaintext, is_text = _as_bytes(value)
        if len(plaintext) > MAX_SECRET_BYTES:
            raise InvalidValue(
                f"secret {name!r} is {len(plaintext)} bytes; secrets are limited to {MAX_SECRET_BYTES} bytes "
                "(store large material as an object and keep its key or password here)"
            )
        aad = secret_aad_for(scope, namespace, pipeline, name)
        row: dict[str, Any] = {
            "scope": scope,
            "ns": namespace,
            "p": pipeline,
            "name": name,
            "is_text": is_text,
            "allowed": None if allowed_namespaces is None else json.dumps(allowed_namespaces),
            "at": to_micros(self.clock.now()),
        }

        def work(conn: Connection) -> bool:
            # A data-key rotation cannot retire the key meanwhile; a put sealed under a key another
            # process has replaced reloads the keys and seals again, so rotations leave nothing behind.
            self.db.serialize(conn, VAULT_LOCK)
            if conn.execute(self._key_is_active, {"key_id": row["key_id"]}).fetchone() is None:
                raise _KeyRetired
            if conn.execute(self._insert, row).rowcount == 1:
                return False
            if not overwrite:
                raise AlreadyExists(
                    f"secret {name!r} already exists in {self._where(scope, namespace, pipeline)}; "
                    "pass overwrite=True (--overwrite) to replace it"
                )
            conn.execute(self._update, row)
            return True

        ring = self.keyring
        while True:
            row["sealed"], row["key_id"] = ring.seal(plaintext, aad), ring.active_id
            try:
                replaced = self.db.write(work)
                break
            except _KeyRetired:
                newer = self._newer_keyring(ring)
                if newer is None:
                    raise VaultError(
                        "the vault's data key was retired while this store was sealing with it, and "
                        "reading the vault's keys again did not help; open the store again"
                    ) from None
                ring = newer
        self._tell("secret_written", scope, namespace, pipeline, name, replaced=replaced)
        return self._info(scope, namespace, pipeline, name)

    def _tell(self, kind: str, scope: Scope, namespace: str, pipeline: str, name: str, **more: Any) -> None:
        if self.notify is None:
            return
        details = {"scope": scope, "name": name, **more}
        if scope == "pipeline":
            self.notify(kind, details, namespace=namespace, pipeline=pipeline)
        else:
            self.notify(kind, details)

    def delete(self, scope: Scope, namespace: str, pipeline: str, name: str) -> None:
        self.keyring  # noqa: B018 - every secret call explains a missing key the same way
        where = {"scope": scope, "ns": namespace, "p": pipeline, "name": name}
        if self.db.write(lambda conn: conn.execute(self._delete, where).rowcount) == 0:
            raise self._not_found(scope, namespace, pipeline, name)
        self._tell("secret_deleted", scope, namespace, pipeline, name)

    # -- reads ------------------------------------------------------------------------------------------

    def get(
        self,
        scope: Scope,
        namespace: str,
        pipeline: str,
        name: str,
        *,
        validate: Callable[[str], object] | None = None,
    ) -> str | bytes:
        """The value as put; ``validate`` checks the name only when nothing is stored under it."""
        return self._open_row(self._get_value, scope, namespace, pipeline, name, validate=validate)[0]

    def get_global_for(self, namespace: str, name: str) -> str | bytes:
        """A global secret, if ``namespace`` matches one of its allowed globs (full match)."""
        value, (allowed,) = self._open_row(self._get, "global", _GLOBAL, _GLOBAL, name)
        if not _allowed(namespace, _patterns(allowed)):
            raise VaultError(
                f"namespace {namespace!r} may not read global secret {name!r}; add a matching pattern to "
                "its namespaces (e.g. with global_secrets.put(..., namespaces=[...], overwrite=True))"
            )
        return value

    def infos(self, scope: Scope, namespace: str, pipeline: str) -> list[SecretInfo]:
        self.keyring  # noqa: B018 - every secret call explains a missing key the same way
        rows = self.db.query_all(self._list, {"scope": scope, "ns": namespace, "p": pipeline})
        return [
            SecretInfo(name, from_micros(created), from_micros(updated)) for name, created, updated in rows
        ]

    def values(self, namespace: str | None = None, pipeline: str | None = None) -> list[str | bytes]:
        """Every secret value (of one pipeline and the globals its namespace may read, if given)."""
        ring = self.keyring
        found: list[str | bytes] = []
        for scope, ns, p, name, sealed, allowed in self.db.query_all(self._all, {}):
            if pipeline is not None:
                if scope == "pipeline" and (ns, p) != (namespace, pipeline):
                    continue
                if scope == "global" and not _allowed(namespace or "", _patterns(allowed)):
                    continue
            found.append(self._unseal(ring, sealed, secret_aad_for(scope, ns, p, name)))
        return found

    def _open_row(
        self,
        statement: str,
        scope: Scope,
        namespace: str,
        pipeline: str,
        name: str,
        *,
        validate: Callable[[str], object] | None = None,
    ) -> tuple[str | bytes, tuple[Any, ...]]:
        """The value of a row read by ``statement`` (sealed, is_text, then any other columns), as it
        was put, and those other columns. On a miss, ``validate`` (if given) checks the name first."""
        ring = self.keyring
        row = self.db.query_one(statement, (scope, namespace, pipeline, name))
        if row is None:
            if validate is not None:
                validate(name)
            raise self._not_found(scope, namespace, pipeline, name)
        sealed, is_text = row[0], row[1]
        aad = secret_aad_for(scope, namespace, pipeline, name)
        try:
            plaintext = ring.unseal(sealed, aad)  # not through _unseal: this is every get's path
        except VaultError as error:
            plaintext = self._unseal_with_newer_keys(ring, sealed, aad, error)
        return (plaintext.decode("utf-8") if is_text else plaintext), row[2:]

    def _info(self, scope: Scope, namespace: str, pipeline: str, name: str) -> SecretInfo:
        row = self.db.query_one(
            self._one_info, {"scope": scope, "ns": namespace, "p": pipeline, "name": name}
        )
        if row is None:
            raise self._not_found(scope, namespace, pipeline, name)
        return SecretInfo(row[0], from_micros(row[1]), from_micros(row[2]))

    # -- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _where(scope: str, namespace: str, pipeline: str) -> str:
        return "the global secrets" if scope == "global" else f"pipeline {namespace}/{pipeline}"

    def _not_found(self, scope: str, namespace: str, pipeline: str, name: str) -> SecretNotFound:
        return SecretNotFound(f"no secret {name!r} in {self._where(scope, namespace, pipeline)}")


@functools.lru_cache(maxsize=4096)  # built from names only (nothing secret), and a fifth of a get's cost
def secret_aad_for(scope: str, namespace: str, pipeline: str, name: str) -> bytes:
    """The associated data of a secret row: binds its ciphertext to its scope, pipeline and name."""
    if scope == "global":
        return secret_aad("global", None, None, name)
    return secret_aad("pipeline", namespace, pipeline, name)


def _patterns(allowed: str | None) -> list[str]:
    return [] if allowed is None else [str(p) for p in json.loads(allowed)]


def _allowed(namespace: str, patterns: list[str]) -> bool:
    # Full-match globs, case-sensitive: "team-*" admits "team-a", not "x-team-a" (deny by default).
    return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in patterns)
