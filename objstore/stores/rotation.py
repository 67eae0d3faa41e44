"""Changing the vault's keys without ever making a secret unreadable.

- ``rotate_encryption_key``: the configured key (key-encryption key) changes. Only the wrapped data keys
  are rewritten, all in one transaction: an interruption leaves the old key valid, and running it again
  with the new key configured (or given) finds the keys already wrapped by it and does nothing.
- ``rotate_data_key``: a fresh data key becomes active, then every secret is resealed with it in batches
  (one short transaction each), then retired keys are deleted. Interrupted anywhere, the keyring still
  holds every key a secret names, and running it again finishes the work.
"""

from __future__ import annotations

from objstore.clock import Clock
from objstore.crypto import kek_from_setting
from objstore.db.database import Connection, Database
from objstore.errors import WrongEncryptionKey
from objstore.keyring import Keyring, reseal
from objstore.stores.secrets import VAULT_LOCK, secret_aad_for, unwrap_keyring
from objstore.timestamps import to_micros

__all__ = ["rotate_data_key", "rotate_encryption_key"]

_SELECT_KEYS = "SELECT key_id, wrapped, active FROM vault_keys"


def rotate_encryption_key(database: Database, current_key: str, new_key: str) -> bool:
    """Rewrap every data key from ``current_key`` to ``new_key``; False if they already use ``new_key``.

    Raises ``WrongEncryptionKey`` (nothing written) if neither key opens the vault.
    """
    old_kek, new_kek = kek_from_setting(current_key), kek_from_setting(new_key)
    update = database.sql("UPDATE vault_keys SET wrapped = :wrapped WHERE key_id = :key_id")

    def work(conn: Connection) -> bool:
        database.serialize(conn, VAULT_LOCK)
        rows = [tuple(row) for row in conn.execute(database.sql(_SELECT_KEYS)).fetchall()]
        if not rows:
            return False
        try:
            unwrap_keyring(new_kek, rows)
            return False  # already rotated (a re-run, or the same key twice)
        except WrongEncryptionKey:
            pass
        ring = unwrap_keyring(old_kek, rows)
        for key_id, wrapped in ring.wrap(new_kek).items():
            conn.execute(update, {"key_id": key_id, "wrapped": wrapped})
        return True

    return database.write(work)


def rotate_data_key(
    database: Database, encryption_key: str, *, clock: Clock, batch_size: int = 500
) -> tuple[Keyring, int]:
    """Make a fresh data key active and reseal every secret with it; the new keyring and how many moved.

    Resumable: a secret is resealed only if it still names an older key, so a re-run after an
    interruption continues where the last committed batch stopped.
    """
    kek = kek_from_setting(encryption_key)
    insert = database.sql(
        "INSERT INTO vault_keys (key_id, wrapped, active, created_at) VALUES (:key_id, :wrapped, TRUE, :at)"
    )
    deactivate = database.sql("UPDATE vault_keys SET active = FALSE WHERE key_id <> :key_id")
    stale = database.sql(
        "SELECT id, scope, namespace, pipeline, name, sealed FROM secrets WHERE key_id <> :key_id LIMIT :n"
    )
    update = database.sql("UPDATE secrets SET sealed = :sealed, key_id = :key_id WHERE id = :id")
    retire = database.sql(
        "DELETE FROM vault_keys WHERE active = FALSE AND key_id NOT IN (SELECT DISTINCT key_id FROM secrets)"
    )

    def new_active(conn: Connection) -> Keyring:
        database.serialize(conn, VAULT_LOCK)
        rows = [tuple(row) for row in conn.execute(database.sql(_SELECT_KEYS)).fetchall()]
        ring, key_id = unwrap_keyring(kek, rows).with_new_active_key()
        conn.execute(deactivate, {"key_id": key_id})
        wrapped = ring.wrap_key(kek, key_id)
        conn.execute(insert, {"key_id": key_id, "wrapped": wrapped, "at": to_micros(clock.now())})
        return ring

    ring = database.write(new_active)
    moved = 0
    while True:

        def batch(conn: Connection) -> int:
            rows = conn.execute(stale, {"key_id": ring.active_id, "n": batch_size}).fetchall()
            for row_id, scope, namespace, pipeline, name, sealed in rows:
                resealed = reseal(sealed, secret_aad_for(scope, namespace, pipeline, name), ring, ring)
                conn.execute(update, {"id": row_id, "sealed": resealed, "key_id": ring.active_id})
            return len(rows)

        done = database.write(batch)
        moved += done
        if done < batch_size:
            break

    def retire_unused(conn: Connection) -> None:
        database.serialize(conn, VAULT_LOCK)  # no secret put is between its key check and its commit
        conn.execute(retire, {})  # keys no secret names any more

    database.write(retire_unused)
    return ring, moved
