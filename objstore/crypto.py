"""AES-256-GCM envelopes for the secret vault: sealing, associated data, and the key-encryption key.

A pure building block: no I/O, no database, no logging, no global state. The secret store keeps the rows;
this module turns bytes into sealed bytes and back. :mod:`objstore.keyring` holds the data keys in memory
and does rotation. Nothing here is thread-unsafe: every object is immutable.

Keys
    The configured ``encryption_key`` is a *key-encryption key* (KEK, :func:`kek_from_setting`). It never
    seals a secret: it wraps random 32-byte *data keys* (:func:`new_data_key`), each with an integer id in
    ``0 .. 2**32 - 1``, as HashiCorp Vault's keyring does. Changing the configured key rewraps the data-key
    rows, not every secret. A wrapped data key is also the key-check record: GCM's tag proves the KEK.

Envelope, format 1 (every sealed secret and every wrapped data key)::

    offset  size     field
    0       1        format byte, 0x01
    1       4        key id, big-endian unsigned: the data key that sealed it (a wrapped data key: its own id)
    5       12       nonce, os.urandom(12), fresh for every seal
    17      n + 16   AES-256-GCM ciphertext || 16-byte tag       (33 bytes for an empty plaintext)

    GCM's associated data is ``header (bytes 0..4) || aad``, so an edited format byte or key id fails to
    open like any other change. A new algorithm or layout gets a new format byte; format 1 stays readable
    (a pinned vector in tests/test_crypto.py guards it).

Associated data
    :func:`secret_aad` binds a secret to its scope, namespace, pipeline and name: a fixed domain label
    then length-prefixed UTF-8 fields (an absent namespace or pipeline is marked, never empty), so a
    ciphertext copied to another row fails to open. A wrapped data key is bound to "objstore/data-key/v1"
    and its id. The two labels differ, and so do the keys, so neither can stand in for the other.

How the secret store is meant to use it (see also :mod:`objstore.keyring`)
    * Tables: ``vault_keys(key_id PK, wrapped, active)``; secrets keep ``sealed`` (and, for rotation
      batches, ``key_id = sealed_key_id(sealed)``) beside their identity columns. Values are sealed as
      bytes; whether a value was put as str or bytes is the store's column, not this module's.
    * open(): ``kek = kek_from_setting(key)``; no key rows: ``Keyring.generate()`` and insert
      ``ring.wrap(kek)`` (the key-check record); otherwise ``Keyring.unwrap(kek, rows, active_id)`` raises
      :class:`WrongEncryptionKey` before anything is written.
    * put/get: ``ring.seal(value, secret_aad(...))`` / ``ring.unseal(sealed, secret_aad(...))``.
    * Changing the KEK: unwrap with the old one, write ``ring.wrap(new_kek)`` over every key row in one
      transaction. Run again with the new key: its unwrap already succeeds, so it is a no-op.
    * Data-key rotation: :mod:`objstore.keyring` (a new active key, then ``reseal`` in batches).

Errors
    :class:`VaultError` when a value cannot be opened (altered, truncated, moved, unknown format or key
    id); :class:`WrongEncryptionKey` when the KEK does not open a wrapped data key; :class:`InvalidValue`
    for arguments of the wrong type or size (a programming error). Messages never contain a key, a
    plaintext or sealed bytes, and no cryptography exception is attached (``__cause__`` and ``__context__``
    are None). Python cannot wipe memory: keys live as ``bytes`` until garbage-collected.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from objstore.errors import InvalidValue, VaultError, WrongEncryptionKey

__all__ = [
    "FORMAT_V1",
    "KEY_BYTES",
    "MAX_KEY_ID",
    "MIN_SEALED_BYTES",
    "BytesLike",
    "DECRYPT_FAILED",
    "KeyLookup",
    "kek_from_setting",
    "new_data_key",
    "seal",
    "sealed_key_id",
    "secret_aad",
    "unseal",
    "unwrap_data_key",
    "wrap_data_key",
]

BytesLike = bytes | bytearray | memoryview
# Returns the data key of an id, or None when the vault does not hold it (a dict's .get fits).
KeyLookup = Callable[[int], bytes | None]

FORMAT_V1: Final = 1
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MAX_KEY_ID: Final = 2**32 - 1
_HEADER: Final = struct.Struct(">BI")  # format byte, key id
MIN_SEALED_BYTES: Final = _HEADER.size + NONCE_BYTES + TAG_BYTES

_SECRET_DOMAIN: Final = b"objstore/secret/v1"
_DATA_KEY_DOMAIN: Final = b"objstore/data-key/v1"
_SCOPES: Final = ("pipeline", "global")

DECRYPT_FAILED: Final = (
    "cannot decrypt secret: it was altered, moved to another name or scope, or sealed with another key"
)
_WRONG_KEY: Final = (
    "the configured encryption key does not open the stored secrets (data key {key_id}): configure the key "
    "the secrets were stored with; to change keys, keep the old key configured and run "
    "`objstore secrets rotate-key` with the new one in OBJSTORE_NEW_ENCRYPTION_KEY"
)


# -- argument checks: programming errors, reported without the values ------------------------------


def _as_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidValue(f"{what} must be bytes, not {type(value).__name__}")


def _key(value: object, what: str) -> bytes:
    key = _as_bytes(value, what)
    if len(key) != KEY_BYTES:
        raise InvalidValue(f"{what} must be {KEY_BYTES} bytes, not {len(key)}")
    return key


def _key_id(value: object) -> int:
    # bool is an int; a key id of True is a bug, not id 1. Only an int is shown: a key passed in the
    # wrong argument position must not end up in the message.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidValue(f"a data key id must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_KEY_ID:
        raise InvalidValue(f"a data key id must be from 0 to {MAX_KEY_ID}, not {value}")
    return value


# -- the envelope --------------------------------------------------------------------------------------


def _seal(cipher: AESGCM, key_id: int, plaintext: bytes, aad: bytes) -> bytes:
    header = _HEADER.pack(FORMAT_V1, key_id)
    nonce = os.urandom(NONCE_BYTES)  # 96 random bits per seal: safe for ~2**32 seals under one key
    return header + nonce + cipher.encrypt(nonce, plaintext, header + aad)


def _header(sealed: bytes, what: str) -> int:
    """The key id of a well-formed format-1 envelope; VaultError for anything else."""
    if len(sealed) < MIN_SEALED_BYTES:
        raise VaultError(
            f"cannot decrypt {what}: the stored value is {len(sealed)} bytes, shorter than any sealed "
            f"value ({MIN_SEALED_BYTES}); it was truncated or is not a sealed value"
        )
    fmt, key_id = _HEADER.unpack_from(sealed)
    if fmt != FORMAT_V1:
        raise VaultError(
            f"cannot decrypt {what}: unknown envelope format {fmt} (this objstore reads format "
            f"{FORMAT_V1}); it was altered or written by a newer objstore"
        )
    return int(key_id)


def _open(cipher: AESGCM, sealed: bytes, aad: bytes) -> bytes | None:
    """The plaintext, or None when GCM rejects it (the caller raises outside this handler, so no
    cryptography exception ends up in ``__context__``)."""
    header = sealed[: _HEADER.size]
    nonce, body = sealed[_HEADER.size : _HEADER.size + NONCE_BYTES], sealed[_HEADER.size + NONCE_BYTES :]
    try:
        return cipher.decrypt(nonce, body, header + aad)
    except InvalidTag:
        return None


def _unknown_key(key_id: int) -> VaultError:
    return VaultError(
        f"cannot decrypt secret: it names data key {key_id}, which the vault does not hold; the value was "
        "altered or its key was removed"
    )


def sealed_key_id(sealed: BytesLike) -> int:
    """The id of the data key that sealed ``sealed`` (not authenticated until it is opened).

    For rotation: rows whose id is not the active one still need :func:`~objstore.keyring.reseal`.
    Raises VaultError when ``sealed`` is not a format-1 envelope.
    """
    return _header(_as_bytes(sealed, "a sealed value"), "secret")


def seal(data_key: BytesLike, key_id: int, plaintext: BytesLike, aad: BytesLike) -> bytes:
    """Encrypt ``plaintext`` under ``data_key`` (named ``key_id`` in the header), bound to ``aad``."""
    cipher = AESGCM(_key(data_key, "a data key"))
    return _seal(cipher, _key_id(key_id), _as_bytes(plaintext, "a secret value"), _as_bytes(aad, "aad"))


def unseal(keyring_lookup: KeyLookup, sealed: BytesLike, aad: BytesLike) -> bytes:
    """Open ``sealed`` with the data key its header names, looked up with ``keyring_lookup``.

    Raises VaultError when the value is malformed, names a key the lookup does not hold, or fails
    authentication (altered, moved to another ``aad``, or sealed with another key).
    """
    sealed_b, aad_b = _as_bytes(sealed, "a sealed value"), _as_bytes(aad, "aad")
    key_id = _header(sealed_b, "secret")
    data_key = keyring_lookup(key_id)
    if data_key is None:
        raise _unknown_key(key_id)
    plaintext = _open(AESGCM(_key(data_key, "a data key")), sealed_b, aad_b)
    if plaintext is None:
        raise VaultError(DECRYPT_FAILED)
    return plaintext


# -- associated data ------------------------------------------------------------------------------------


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _text(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidValue(f"the secret's {what} must be a str, not {type(value).__name__}")
    encoded = _utf8(value)
    if encoded is None:
        raise InvalidValue(f"the secret's {what} is not valid Unicode text (it has a lone surrogate)")
    return encoded


def _utf8(text: str) -> bytes | None:
    # None instead of UnicodeEncodeError: its message quotes the text, and the caller raises its own
    # error outside this handler so the codec error is not kept as __context__.
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def secret_aad(
    scope: Literal["pipeline", "global"], namespace: str | None, pipeline: str | None, name: str
) -> bytes:
    """Associated data that binds a sealed secret to where it is stored.

    ``scope="pipeline"`` needs ``namespace`` and ``pipeline``; ``scope="global"`` takes neither (global
    secrets have an allow-list, not a namespace). Layout: field(b"objstore/secret/v1"), field(scope),
    then namespace and pipeline each as b"\\x00" (absent) or b"\\x01" + field(utf8), then field(name),
    where field(b) = 4-byte big-endian length + b. Raises InvalidValue for anything else.
    """
    if scope not in _SCOPES:
        raise InvalidValue(f"a secret's scope is 'pipeline' or 'global', not {scope!r}")
    present = scope == "pipeline"
    parts = [_field(_SECRET_DOMAIN), _field(scope.encode("ascii"))]
    for what, value in (("namespace", namespace), ("pipeline", pipeline)):
        if (value is not None) != present:
            needs = "needs" if present else "takes no"
            raise InvalidValue(f"a {scope} secret {needs} {what}")
        parts.append(b"\x00" if value is None else b"\x01" + _field(_text(value, what)))
    parts.append(_field(_text(name, "name")))
    return b"".join(parts)


def _data_key_aad(key_id: int) -> bytes:
    return _field(_DATA_KEY_DOMAIN) + key_id.to_bytes(4, "big")


# -- key-encryption key and data keys -------------------------------------------------------------------


def kek_from_setting(key: str | bytes) -> bytes:
    """The key-encryption key from the configured ``encryption_key``: UTF-8 of a str, exactly 32 bytes.

    Raises VaultError naming the length (never the key) for any other size.
    """
    if isinstance(key, str):
        encoded = _utf8(key)
        if encoded is None:
            raise VaultError(
                "the encryption key is not valid UTF-8 text (undecodable bytes in the file or "
                f"environment); set a key of exactly {KEY_BYTES} bytes, e.g. from `objstore init-config`"
            )
        raw = encoded
    elif isinstance(key, bytes):
        raw = key
    else:
        raise InvalidValue(f"the encryption key must be str or bytes, not {type(key).__name__}")
    if len(raw) != KEY_BYTES:
        note = ""
        if isinstance(key, str):
            note = " in UTF-8" if key.isascii() else " in UTF-8 (characters outside ASCII take 2-4 bytes)"
        raise VaultError(
            f"the encryption key is {len(raw)} bytes long{note}; it must be exactly {KEY_BYTES} bytes: "
            "create one with `objstore init-config`"
        )
    return raw


def new_data_key() -> bytes:
    """A fresh random 32-byte data key."""
    return os.urandom(KEY_BYTES)


def wrap_data_key(kek: BytesLike, key_id: int, data_key: BytesLike) -> bytes:
    """Seal a data key under the KEK, bound to its id. The result is the key's stored row."""
    key_id = _key_id(key_id)
    cipher = AESGCM(_key(kek, "the encryption key"))
    return _seal(cipher, key_id, _key(data_key, "a data key"), _data_key_aad(key_id))


def unwrap_data_key(kek: BytesLike, key_id: int, wrapped: BytesLike) -> bytes:
    """Open a wrapped data key; this is the key check.

    Raises WrongEncryptionKey when the KEK does not open it (GCM cannot tell a wrong key from an altered
    row; a wrong key is by far the likelier), VaultError when the row is malformed or names another id.
    """
    key_id = _key_id(key_id)
    cipher = AESGCM(_key(kek, "the encryption key"))
    wrapped_b = _as_bytes(wrapped, "a wrapped data key")
    what = f"data key {key_id}"
    named = _header(wrapped_b, what)
    if named != key_id:
        raise VaultError(
            f"cannot decrypt {what}: its record names data key {named}; the key table was altered"
        )
    data_key = _open(cipher, wrapped_b, _data_key_aad(key_id))
    if data_key is None:
        raise WrongEncryptionKey(_WRONG_KEY.format(key_id=key_id))
    if len(data_key) != KEY_BYTES:  # authentic yet the wrong size: written by a broken writer
        raise VaultError(f"cannot use {what}: it is {len(data_key)} bytes, not {KEY_BYTES}")
    return data_key
