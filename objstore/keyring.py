"""The vault's data keys in memory: seal with the active key, open with the key a value names, rotate.

A :class:`Keyring` is immutable (rotation returns a new one), so one instance may be shared by every
thread of a store. It never holds the key-encryption key; it is built from the wrapped key rows with
:meth:`Keyring.unwrap` and turned back into rows with :meth:`Keyring.wrap`. See :mod:`objstore.crypto`
for the envelope and for how the secret store is meant to use both modules.

Rotation without losing data (the store's loop, each step its own short transaction)::

    new_ring, new_id = ring.with_new_active_key()
    store new_ring.wrap_key(kek, new_id) as the active key row          # commit
    for each batch of rows whose key_id != new_id:
        row.sealed = reseal(row.sealed, aad_of(row), ring, new_ring)    # commit per batch
    optionally delete the old key rows once no row names them (never reuse their ids)

A crash between any two steps leaves every row sealed under a key the vault still holds, and running the
loop again finishes the job (:func:`reseal` leaves values already under the active key as they are).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from objstore.crypto import (
    _HEADER,
    DECRYPT_FAILED,
    FORMAT_V1,
    MAX_KEY_ID,
    MIN_SEALED_BYTES,
    NONCE_BYTES,
    BytesLike,
    _as_bytes,
    _header,
    _key,
    _key_id,
    _open,
    _seal,
    _unknown_key,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from objstore.errors import InvalidValue, VaultError

__all__ = ["Keyring", "reseal"]


class Keyring:
    """Data keys by id and the id that seals new values. Its repr shows ids only."""

    __slots__ = ("_active_id", "_by_header", "_ciphers", "_keys")

    def __init__(self, keys: Mapping[int, bytes], active_id: int) -> None:
        checked = {_key_id(key_id): _key(key, f"data key {key_id}") for key_id, key in keys.items()}
        if _key_id(active_id) not in checked:
            raise InvalidValue(f"the active data key {active_id} is not in the keyring {sorted(checked)}")
        self._keys: dict[int, bytes] = checked
        self._active_id = active_id
        # One AESGCM per key: building it costs more than the decryption of a small secret.
        self._ciphers: dict[int, AESGCM] = {key_id: AESGCM(key) for key_id, key in checked.items()}
        # The same ciphers by the exact envelope header that names them (format 1, key id): one lookup
        # checks both on every secret get.
        self._by_header: dict[bytes, AESGCM] = {
            _HEADER.pack(FORMAT_V1, key_id): cipher for key_id, cipher in self._ciphers.items()
        }

    @classmethod
    def generate(cls, key_id: int = 1) -> Keyring:
        """A keyring with one fresh data key, for a vault that has none yet."""
        return cls({key_id: new_data_key()}, key_id)

    @classmethod
    def unwrap(cls, kek: BytesLike, wrapped: Mapping[int, BytesLike], active_id: int) -> Keyring:
        """Open the stored key rows ``{key_id: wrapped}`` with the KEK: the key check at open.

        Raises WrongEncryptionKey when the KEK does not open a row, VaultError when a row is damaged.
        """
        return cls({key_id: unwrap_data_key(kek, key_id, row) for key_id, row in wrapped.items()}, active_id)

    def wrap(self, kek: BytesLike) -> dict[int, bytes]:
        """Every data key wrapped under ``kek``: the rows to store (also after a change of KEK)."""
        return {key_id: wrap_data_key(kek, key_id, key) for key_id, key in self._keys.items()}

    def wrap_key(self, kek: BytesLike, key_id: int) -> bytes:
        """One data key wrapped under ``kek``, e.g. the one :meth:`with_new_active_key` added."""
        if key_id not in self._keys:
            self._unknown(key_id)
        return wrap_data_key(kek, key_id, self._keys[key_id])

    @property
    def active_id(self) -> int:
        """The id of the data key that seals new values."""
        return self._active_id

    @property
    def key_ids(self) -> tuple[int, ...]:
        """The ids of every data key held, ascending."""
        return tuple(sorted(self._keys))

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def seal(self, plaintext: BytesLike, aad: BytesLike) -> bytes:
        """Encrypt under the active data key, bound to ``aad`` (see :func:`~objstore.crypto.secret_aad`)."""
        cipher = self._ciphers[self._active_id]
        return _seal(cipher, self._active_id, _as_bytes(plaintext, "a secret value"), _as_bytes(aad, "aad"))

    def unseal(self, sealed: BytesLike, aad: BytesLike) -> bytes:
        """Open with the data key the header names; VaultError when it cannot be opened."""
        if type(sealed) is bytes and type(aad) is bytes and len(sealed) >= MIN_SEALED_BYTES:
            # Every secret get comes here (the database returns bytes): a well-formed envelope under a
            # key this ring holds. Anything else takes the checks below, which say what is wrong.
            header = sealed[: _HEADER.size]
            cipher = self._by_header.get(header)
            if cipher is not None:
                body = _HEADER.size + NONCE_BYTES
                try:
                    return cipher.decrypt(sealed[_HEADER.size : body], sealed[body:], header + aad)
                except InvalidTag:
                    pass
                raise VaultError(DECRYPT_FAILED)  # outside the handler: no cryptography error in the chain
        sealed_b = sealed if type(sealed) is bytes else _as_bytes(sealed, "a sealed value")
        key_id = _header(sealed_b, "secret")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            self._unknown(key_id)
        plaintext = _open(cipher, sealed_b, aad if type(aad) is bytes else _as_bytes(aad, "aad"))
        if plaintext is None:
            raise VaultError(DECRYPT_FAILED)
        return plaintext

    def with_new_active_key(self) -> tuple[Keyring, int]:
        """A keyring with every key of this one plus a fresh active data key, and that key's id."""
        new_id = max(self._keys) + 1
        if new_id > MAX_KEY_ID:
            raise VaultError(f"no data key id is left after {MAX_KEY_ID}; the vault cannot rotate further")
        return Keyring({**self._keys, new_id: new_data_key()}, new_id), new_id

    def without_key(self, key_id: int) -> Keyring:
        """A keyring without ``key_id``, once no stored value names it. The active key cannot go."""
        if key_id == self._active_id:
            raise InvalidValue(f"data key {key_id} is the active key; rotate to another one first")
        if key_id not in self._keys:
            self._unknown(key_id)
        return Keyring({k: v for k, v in self._keys.items() if k != key_id}, self._active_id)

    def __repr__(self) -> str:
        return f"Keyring(active_id={self._active_id}, key_ids={list(self.key_ids)})"

    def __reduce__(self) -> NoReturn:
        # Pickling would copy raw keys into caches, queues or files; rebuild from wrapped rows instead.
        raise TypeError(
            "a Keyring holds raw data keys and cannot be pickled; store Keyring.wrap(kek) instead"
        )

    @staticmethod
    def _unknown(key_id: int) -> NoReturn:
        raise _unknown_key(key_id)


def reseal(sealed: BytesLike, aad: BytesLike, old_keyring: Keyring, new_keyring: Keyring) -> bytes:
    """``sealed`` re-encrypted under ``new_keyring``'s active key, still bound to ``aad``.

    Opened with ``old_keyring`` when it holds the key the value names, else with ``new_keyring``. A value
    already under the new active key is verified and returned unchanged (the same object), so a resumed
    rotation skips it: compare with ``is`` to know whether the row needs writing.
    Raises VaultError when the value cannot be opened; nothing is written here.
    """
    sealed_b = _as_bytes(sealed, "a sealed value")
    key_id = _header(sealed_b, "secret")
    if key_id == new_keyring.active_id:
        new_keyring.unseal(sealed_b, aad)
        return sealed if isinstance(sealed, bytes) else sealed_b
    opener = old_keyring if key_id in old_keyring else new_keyring
    return new_keyring.seal(opener.unseal(sealed_b, aad), aad)
