"""The vault's envelope: round trips, tampering, moved ciphertexts, key handling, format stability, and
no key or plaintext in any error."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from objstore.crypto import (
    DECRYPT_FAILED,
    MAX_KEY_ID,
    MIN_SEALED_BYTES,
    kek_from_setting,
    new_data_key,
    seal,
    sealed_key_id,
    secret_aad,
    unseal,
    unwrap_data_key,
    wrap_data_key,
)
from objstore.errors import InvalidValue, VaultError, WrongEncryptionKey

DATA_KEY = bytes(range(100, 132))
KEY_ID = 1
LOOKUP = {KEY_ID: DATA_KEY}.get
KEK = b"K3k-for-tests-0123456789abcdefgh"
PLAINTEXT = b"PLAINTEXT-hunter2-\x00\xff-end"
AAD = secret_aad("pipeline", "default", "build-app", "DEPLOY_TOKEN")

# Format stability: built once by hand with AESGCM (fixed nonces) from the layout in objstore.crypto's
# docstring, then pasted here. If these stop opening, stored vaults stop opening: add a format, never
# change format 1.
PINNED_KEK = b"objstore-pinned-test-kek-0000001"
PINNED_DATA_KEY = bytes(range(32, 64))
PINNED_KEY_ID = 7
PINNED_WRAPPED = bytes.fromhex(
    "01000000070102030405060708090a0b0c0b5c827c4b51850a678d58d80f1469e2c266cdb09951146cc2ad08756278578073"
    "e4d7a5ba06959760766625c5b85334"
)
PINNED_SEALED = bytes.fromhex(
    "010000000765666768696a6b6c6d6e6f70e2908a9dbaedbddaf7982716e5d02e3039461f658b22965ad5cb4985738283148e"
    "e278330c"
)
PINNED_PLAINTEXT = "s3cr3t\nmulti-line ✓".encode()
PINNED_AAD = bytes.fromhex(
    "000000126f626a73746f72652f7365637265742f763100000008706970656c696e65010000000764656661756c740100000009"
    "6275696c642d6170700000000c4445504c4f595f544f4b454e"
)


def field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    todo: list[BaseException] = [exc]
    seen: list[BaseException] = []
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def secret_forms(*values: bytes) -> list[str]:
    """The ways a key, plaintext or ciphertext could show up in text."""
    forms: list[str] = []
    for value in values:
        if len(value) < 3:  # too short to tell from ordinary text
            continue
        forms += [value.hex(), repr(value)[2:-1]]
        text = value.decode("utf-8", "ignore")
        if len(text) >= 8:
            forms.append(text)
    return forms


def assert_clean(exc: BaseException, *secrets: bytes) -> None:
    """No secret in the error, its chain or its printed form (with notes); no cryptography error attached."""
    assert exc.__cause__ is None
    assert exc.__context__ is None
    forms = secret_forms(*secrets)
    for link in exception_chain(exc):
        for text in (str(link), repr(link), repr(link.args), "".join(traceback.format_exception_only(link))):
            for form in forms:
                assert form not in text


def raises_vault_error(call: Callable[[], object], *secrets: bytes) -> VaultError:
    with pytest.raises(VaultError) as info:
        call()
    assert_clean(info.value, *secrets)
    return info.value


# -- round trips and layout --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"x",
        bytes(range(256)),
        b"line one\nline two\r\n\n\ttabbed\n",
        "ünïcödé ✓ 🔑".encode(),
        os.urandom(64 * 1024),
    ],
    ids=["empty", "one-byte", "all-byte-values", "multi-line", "utf8", "64KiB"],
)
def test_round_trip(plaintext: bytes) -> None:
    sealed = seal(DATA_KEY, KEY_ID, plaintext, AAD)
    assert unseal(LOOKUP, sealed, AAD) == plaintext
    # Only meaningful for longer values: a byte or two occurs in random ciphertext by chance.
    assert len(plaintext) < 8 or plaintext not in sealed


def test_bytes_like_arguments_are_accepted() -> None:
    sealed = seal(bytearray(DATA_KEY), KEY_ID, memoryview(PLAINTEXT), bytearray(AAD))
    assert unseal(LOOKUP, memoryview(sealed), memoryview(AAD)) == PLAINTEXT


def test_envelope_layout() -> None:
    sealed = seal(DATA_KEY, 0x01020304, PLAINTEXT, AAD)
    assert sealed[0] == 1
    assert sealed[1:5] == b"\x01\x02\x03\x04"
    assert len(sealed) == 1 + 4 + 12 + len(PLAINTEXT) + 16
    assert sealed_key_id(sealed) == 0x01020304
    assert len(seal(DATA_KEY, KEY_ID, b"", AAD)) == MIN_SEALED_BYTES == 33


def test_nonces_and_ciphertexts_never_repeat() -> None:
    sealed = [seal(DATA_KEY, KEY_ID, b"same value", AAD) for _ in range(10_000)]
    assert len({s[5:17] for s in sealed}) == 10_000
    assert len({s[17:] for s in sealed}) == 10_000
    assert len(set(sealed)) == 10_000


# -- tampering, truncation, unknown format and key ---------------------------------------------------


def test_every_flipped_byte_is_refused() -> None:
    sealed = seal(DATA_KEY, KEY_ID, PLAINTEXT, AAD)
    for position in range(len(sealed)):
        for mask in (0x01, 0x80, 0xFF):
            altered = bytearray(sealed)
            altered[position] ^= mask
            raises_vault_error(partial(unseal, LOOKUP, bytes(altered), AAD), PLAINTEXT, DATA_KEY, sealed)


@pytest.mark.parametrize("plaintext", [b"", PLAINTEXT], ids=["empty", "value"])
def test_every_truncation_is_refused(plaintext: bytes) -> None:
    sealed = seal(DATA_KEY, KEY_ID, plaintext, AAD)
    for length in range(len(sealed)):
        raises_vault_error(partial(unseal, LOOKUP, sealed[:length], AAD), PLAINTEXT, DATA_KEY)
    raises_vault_error(lambda: unseal(LOOKUP, sealed + b"\x00", AAD), PLAINTEXT, DATA_KEY)


def test_too_short_says_so() -> None:
    error = raises_vault_error(lambda: unseal(LOOKUP, b"\x01\x00\x00", AAD))
    assert "3 bytes" in str(error)
    assert "truncated" in str(error)


@pytest.mark.parametrize("fmt", [0, 2, 0x7F, 0xFF])
def test_unknown_format_byte_is_refused(fmt: int) -> None:
    sealed = bytes([fmt]) + seal(DATA_KEY, KEY_ID, PLAINTEXT, AAD)[1:]
    error = raises_vault_error(lambda: unseal(LOOKUP, sealed, AAD), PLAINTEXT, DATA_KEY)
    assert f"unknown envelope format {fmt}" in str(error)


def test_header_is_authenticated() -> None:
    # The same key under two ids: only the header's place in the associated data stops the edit.
    lookup = {1: DATA_KEY, 2: DATA_KEY}.get
    sealed = seal(DATA_KEY, 1, PLAINTEXT, AAD)
    edited = sealed[:1] + (2).to_bytes(4, "big") + sealed[5:]
    error = raises_vault_error(lambda: unseal(lookup, edited, AAD), PLAINTEXT, DATA_KEY)
    assert str(error) == DECRYPT_FAILED


def test_unknown_key_id_is_refused() -> None:
    sealed = seal(DATA_KEY, 9, PLAINTEXT, AAD)
    error = raises_vault_error(lambda: unseal(LOOKUP, sealed, AAD), PLAINTEXT, DATA_KEY)
    assert "data key 9" in str(error)


def test_another_data_key_is_refused() -> None:
    sealed = seal(new_data_key(), KEY_ID, PLAINTEXT, AAD)
    error = raises_vault_error(lambda: unseal(LOOKUP, sealed, AAD), PLAINTEXT, DATA_KEY)
    assert str(error) == DECRYPT_FAILED


@given(st.binary(max_size=80))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with pytest.raises(VaultError) as info:
        unseal(LOOKUP, data, AAD)
    assert info.value.__context__ is None


# -- associated data -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moved_to",
    [
        secret_aad("pipeline", "default", "build-app", "DEPLOY_TOKEN2"),
        secret_aad("pipeline", "default", "build-app", "deploy_token"),
        secret_aad("pipeline", "default", "build-web", "DEPLOY_TOKEN"),
        secret_aad("pipeline", "team-a", "build-app", "DEPLOY_TOKEN"),
        secret_aad("global", None, None, "DEPLOY_TOKEN"),
        secret_aad("pipeline", "defaultbuild", "-app", "DEPLOY_TOKEN"),
        b"",
    ],
    ids=["name", "name-case", "pipeline", "namespace", "global-scope", "shifted-boundary", "no-aad"],
)
def test_moved_ciphertext_is_refused(moved_to: bytes) -> None:
    sealed = seal(DATA_KEY, KEY_ID, PLAINTEXT, AAD)
    error = raises_vault_error(lambda: unseal(LOOKUP, sealed, moved_to), PLAINTEXT, DATA_KEY)
    assert str(error) == DECRYPT_FAILED


def test_global_secret_does_not_open_as_pipeline_secret() -> None:
    global_aad = secret_aad("global", None, None, "NPM_TOKEN")
    sealed = seal(DATA_KEY, KEY_ID, PLAINTEXT, global_aad)
    assert unseal(LOOKUP, sealed, global_aad) == PLAINTEXT
    raises_vault_error(lambda: unseal(LOOKUP, sealed, secret_aad("pipeline", "a", "b", "NPM_TOKEN")))


def test_secret_aad_layout_is_pinned() -> None:
    assert secret_aad("pipeline", "default", "build-app", "DEPLOY_TOKEN") == PINNED_AAD
    assert secret_aad("global", None, None, "N") == (
        field(b"objstore/secret/v1") + field(b"global") + b"\x00" + b"\x00" + field(b"N")
    )


def test_secret_aad_is_unambiguous() -> None:
    cases = [
        ("pipeline", "a", "bc", "d"),
        ("pipeline", "ab", "c", "d"),
        ("pipeline", "a", "b", "cd"),
        ("pipeline", "a", "", "bcd"),
        ("pipeline", "", "a", "bcd"),
        ("pipeline", "a", "b", "c\x00"),
        ("global", None, None, "abcd"),
        ("global", None, None, "ABCD"),
        ("pipeline", "é", "b", "c"),
        ("pipeline", "e\u0301", "b", "c"),  # same text to a reader, other bytes: another secret
    ]
    encoded = {secret_aad(*case) for case in cases}  # type: ignore[arg-type]
    assert len(encoded) == len(cases)


@pytest.mark.parametrize(
    ("scope", "namespace", "pipeline", "name"),
    [
        ("pipeline", None, "build-app", "X"),
        ("pipeline", "default", None, "X"),
        ("global", "default", None, "X"),
        ("global", None, "build-app", "X"),
        ("Pipeline", "default", "build-app", "X"),
        ("namespace", "default", None, "X"),
        ("pipeline", "default", "build-app", b"X"),
        ("pipeline", "default", "build-app", "bad\udcffname"),
        ("pipeline", 3, "build-app", "X"),
    ],
)
def test_secret_aad_rejects_bad_arguments(
    scope: str, namespace: object, pipeline: object, name: object
) -> None:
    with pytest.raises(InvalidValue) as info:
        secret_aad(scope, namespace, pipeline, name)  # type: ignore[arg-type]
    assert info.value.__context__ is None
    assert "udcff" not in str(info.value)


# -- the key-encryption key ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33, 64])
def test_kek_of_wrong_length_is_refused(length: int) -> None:
    text = ("Zq7-secret-key-material-" * 3)[:length]
    for key in (text, text.encode()):
        error = raises_vault_error(partial(kek_from_setting, key), text.encode())
        assert f"{length} bytes" in str(error)
        assert "exactly 32 bytes" in str(error)


@pytest.mark.parametrize(
    "key",
    ["é" * 32, "é" * 15, "€" * 11, "€" * 10 + "a", "🔑" * 8 + "x", "Schlüssel-" * 3 + "üü"],
    ids=["32-chars-64-bytes", "30-bytes", "33-bytes", "31-bytes", "33-bytes-emoji", "34-bytes"],
)
def test_non_ascii_kek_that_is_not_32_bytes_is_refused(key: str) -> None:
    assert len(key.encode()) != 32
    error = raises_vault_error(lambda: kek_from_setting(key), key.encode())
    assert f"{len(key.encode())} bytes" in str(error)
    assert "outside ASCII" in str(error)
    assert key not in str(error)


@pytest.mark.parametrize("key", ["é" * 16, "€" * 10 + "ab", "🔑" * 8])
def test_non_ascii_kek_of_32_bytes_is_accepted(key: str) -> None:
    assert kek_from_setting(key) == key.encode("utf-8")


def test_kek_of_32_bytes_is_accepted() -> None:
    assert kek_from_setting(KEK.decode()) == KEK
    assert kek_from_setting(KEK) == KEK


def test_kek_with_undecodable_bytes_is_refused() -> None:
    key = "abc\udcff" + "x" * 28  # what os.environ holds for a non-UTF-8 byte
    error = raises_vault_error(lambda: kek_from_setting(key), b"abc", b"x" * 28)
    assert "UTF-8" in str(error)
    assert "udcff" not in str(error)


def test_kek_of_wrong_type_is_refused() -> None:
    with pytest.raises(InvalidValue):
        kek_from_setting(12345)  # type: ignore[arg-type]


# -- data keys -----------------------------------------------------------------------------------------


def test_new_data_keys_are_random_32_bytes() -> None:
    keys = {new_data_key() for _ in range(100)}
    assert len(keys) == 100
    assert {len(k) for k in keys} == {32}


def test_wrap_round_trip() -> None:
    wrapped = wrap_data_key(KEK, 3, DATA_KEY)
    assert sealed_key_id(wrapped) == 3
    assert DATA_KEY not in wrapped
    assert unwrap_data_key(KEK, 3, wrapped) == DATA_KEY
    assert wrap_data_key(KEK, 3, DATA_KEY) != wrapped  # fresh nonce every time


def test_wrong_kek_raises_wrong_encryption_key() -> None:
    wrapped = wrap_data_key(KEK, 3, DATA_KEY)
    other = b"another-key-of-exactly-32-bytes!"
    with pytest.raises(WrongEncryptionKey) as info:
        unwrap_data_key(other, 3, wrapped)
    assert_clean(info.value, KEK, other, DATA_KEY, wrapped)
    message = str(info.value)
    assert "does not open the stored secrets" in message
    assert "the key the secrets were stored with" in message
    assert "objstore secrets rotate-key" in message


def test_wrapped_key_moved_to_another_id_is_refused() -> None:
    wrapped = wrap_data_key(KEK, 3, DATA_KEY)
    error = raises_vault_error(lambda: unwrap_data_key(KEK, 4, wrapped), KEK, DATA_KEY)
    assert not isinstance(error, WrongEncryptionKey)
    # Header edited to match: the id is in the associated data too, so the tag fails.
    edited = wrapped[:1] + (4).to_bytes(4, "big") + wrapped[5:]
    raises_vault_error(lambda: unwrap_data_key(KEK, 4, edited), KEK, DATA_KEY)


def test_every_altered_wrapped_key_is_refused() -> None:
    wrapped = wrap_data_key(KEK, 3, DATA_KEY)
    for position in range(len(wrapped)):
        altered = bytearray(wrapped)
        altered[position] ^= 0x01
        raises_vault_error(partial(unwrap_data_key, KEK, 3, bytes(altered)), KEK, DATA_KEY)
    for length in range(len(wrapped)):
        raises_vault_error(partial(unwrap_data_key, KEK, 3, wrapped[:length]), KEK, DATA_KEY)


def test_wrapped_key_and_sealed_secret_do_not_stand_in_for_each_other() -> None:
    # Even with the KEK used as a data key, the domain labels keep the two kinds apart.
    wrapped = wrap_data_key(KEK, 1, DATA_KEY)
    raises_vault_error(lambda: unseal({1: KEK}.get, wrapped, AAD))
    raises_vault_error(lambda: unseal({1: KEK}.get, wrapped, b""))


# -- argument errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key_id", [-1, MAX_KEY_ID + 1, True, 1.0, "1"])
def test_bad_key_id_is_refused(key_id: object) -> None:
    with pytest.raises(InvalidValue):
        seal(DATA_KEY, key_id, PLAINTEXT, AAD)  # type: ignore[arg-type]


def test_boundary_key_ids_work() -> None:
    for key_id in (0, MAX_KEY_ID):
        sealed = seal(DATA_KEY, key_id, PLAINTEXT, AAD)
        assert unseal({key_id: DATA_KEY}.get, sealed, AAD) == PLAINTEXT


def test_swapped_arguments_do_not_print_the_key() -> None:
    with pytest.raises(InvalidValue) as info:
        wrap_data_key(KEK, DATA_KEY, 3)  # type: ignore[arg-type]
    assert_clean(info.value, KEK, DATA_KEY)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_data_key_of_wrong_size_is_refused(size: int) -> None:
    key = DATA_KEY[:size] if size <= 32 else DATA_KEY + b"!"
    with pytest.raises(InvalidValue) as info:
        seal(key, KEY_ID, PLAINTEXT, AAD)
    assert_clean(info.value, DATA_KEY, PLAINTEXT)


def test_str_plaintext_is_refused() -> None:
    with pytest.raises(InvalidValue) as info:
        seal(DATA_KEY, KEY_ID, "a str value", AAD)  # type: ignore[arg-type]
    assert "a str value" not in str(info.value)


# -- format stability ----------------------------------------------------------------------------------


def test_pinned_format_1_still_opens() -> None:
    data_key = unwrap_data_key(PINNED_KEK, PINNED_KEY_ID, PINNED_WRAPPED)
    assert data_key == PINNED_DATA_KEY
    aad = secret_aad("pipeline", "default", "build-app", "DEPLOY_TOKEN")
    assert unseal({PINNED_KEY_ID: data_key}.get, PINNED_SEALED, aad) == PINNED_PLAINTEXT


def test_pinned_vectors_follow_the_documented_layout() -> None:
    # Rebuilt from the docstring's layout with AESGCM alone and the nonces the vectors were made with.
    header = b"\x01" + PINNED_KEY_ID.to_bytes(4, "big")
    nonce = bytes(range(1, 13))
    key_aad = header + field(b"objstore/data-key/v1") + PINNED_KEY_ID.to_bytes(4, "big")
    assert header + nonce + AESGCM(PINNED_KEK).encrypt(nonce, PINNED_DATA_KEY, key_aad) == PINNED_WRAPPED
    nonce = bytes(range(101, 113))
    sealed = header + nonce + AESGCM(PINNED_DATA_KEY).encrypt(nonce, PINNED_PLAINTEXT, header + PINNED_AAD)
    assert sealed == PINNED_SEALED
