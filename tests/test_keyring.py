"""The keyring: sealing with the active key, opening by the header's key, wrapping under the KEK,
rotation and reseal, and keys kept out of every repr and error."""

from __future__ import annotations

import copy
import pickle
import threading
from functools import partial

import pytest
from test_crypto import assert_clean, raises_vault_error, secret_forms

from objstore.crypto import MAX_KEY_ID, sealed_key_id, secret_aad
from objstore.errors import InvalidValue, VaultError, WrongEncryptionKey
from objstore.keyring import Keyring, reseal

KEK = b"K3k-for-tests-0123456789abcdefgh"
NEW_KEK = b"new-K3k-for-tests-0123456789abcd"
KEY_1 = bytes(range(32))
KEY_2 = bytes(range(64, 96))
PLAINTEXT = b"PLAINTEXT-hunter2-\x00\xff-end"
AAD = secret_aad("pipeline", "default", "build-app", "DEPLOY_TOKEN")


def test_round_trip_and_header() -> None:
    ring = Keyring({1: KEY_1, 2: KEY_2}, active_id=2)
    sealed = ring.seal(PLAINTEXT, AAD)
    assert sealed_key_id(sealed) == 2
    assert ring.unseal(sealed, AAD) == PLAINTEXT
    assert ring.active_id == 2
    assert ring.key_ids == (1, 2)
    assert 1 in ring
    assert 3 not in ring
    assert len(ring) == 2


def test_opens_values_of_every_key_it_holds() -> None:
    old = Keyring({1: KEY_1}, 1)
    sealed = old.seal(PLAINTEXT, AAD)
    assert Keyring({1: KEY_1, 2: KEY_2}, 2).unseal(sealed, AAD) == PLAINTEXT


def test_unknown_key_id_is_refused() -> None:
    sealed = Keyring({2: KEY_2}, 2).seal(PLAINTEXT, AAD)
    error = raises_vault_error(lambda: Keyring({1: KEY_1}, 1).unseal(sealed, AAD), PLAINTEXT, KEY_1, KEY_2)
    assert "data key 2" in str(error)


def test_tampering_and_moving_are_refused() -> None:
    ring = Keyring({1: KEY_1}, 1)
    sealed = ring.seal(PLAINTEXT, AAD)
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= 0x01
        raises_vault_error(partial(ring.unseal, bytes(altered), AAD), PLAINTEXT, KEY_1)
    for length in range(len(sealed)):
        raises_vault_error(partial(ring.unseal, sealed[:length], AAD), PLAINTEXT, KEY_1)
    moved = secret_aad("pipeline", "default", "build-app", "OTHER")
    raises_vault_error(lambda: ring.unseal(sealed, moved), PLAINTEXT, KEY_1)


def test_repr_and_str_show_ids_only() -> None:
    ring = Keyring({1: KEY_1, 5: KEY_2}, 5)
    assert repr(ring) == "Keyring(active_id=5, key_ids=[1, 5])"
    for text in (repr(ring), str(ring), f"{ring}", f"{ring!r}", repr([ring]), repr({"ring": ring})):
        for form in secret_forms(KEY_1, KEY_2):
            assert form not in text


def test_cannot_be_pickled_or_copied_into_raw_keys() -> None:
    ring = Keyring({1: KEY_1}, 1)
    with pytest.raises(TypeError):
        pickle.dumps(ring)
    with pytest.raises(TypeError):
        copy.deepcopy(ring)
    assert not hasattr(ring, "__dict__")


def test_construction_is_checked_without_printing_keys() -> None:
    with pytest.raises(InvalidValue) as info:
        Keyring({1: KEY_1}, 2)
    assert_clean(info.value, KEY_1)
    with pytest.raises(InvalidValue) as info:
        Keyring({1: KEY_1[:31]}, 1)
    assert_clean(info.value, KEY_1[:31])
    with pytest.raises(InvalidValue):
        Keyring({}, 1)
    with pytest.raises(InvalidValue):
        Keyring({-1: KEY_1}, -1)


def test_mutating_the_source_mapping_does_not_change_the_keyring() -> None:
    keys = {1: KEY_1}
    ring = Keyring(keys, 1)
    keys[1] = KEY_2
    sealed = ring.seal(PLAINTEXT, AAD)
    assert Keyring({1: KEY_1}, 1).unseal(sealed, AAD) == PLAINTEXT


# -- wrapping under the KEK --------------------------------------------------------------------------


def test_wrap_and_unwrap_round_trip() -> None:
    ring = Keyring({1: KEY_1, 2: KEY_2}, 2)
    rows = ring.wrap(KEK)
    assert set(rows) == {1, 2}
    for row in rows.values():
        assert KEY_1 not in row
        assert KEY_2 not in row
    reopened = Keyring.unwrap(KEK, rows, 2)
    assert reopened.key_ids == (1, 2)
    assert reopened.unseal(ring.seal(PLAINTEXT, AAD), AAD) == PLAINTEXT
    assert Keyring.unwrap(KEK, {2: ring.wrap_key(KEK, 2)}, 2).unseal(ring.seal(b"x", AAD), AAD) == b"x"


def test_unwrap_with_wrong_kek_is_wrong_encryption_key() -> None:
    rows = Keyring({1: KEY_1}, 1).wrap(KEK)
    with pytest.raises(WrongEncryptionKey) as info:
        Keyring.unwrap(NEW_KEK, rows, 1)
    assert_clean(info.value, KEK, NEW_KEK, KEY_1, rows[1])
    assert "rotate-key" in str(info.value)


def test_changing_the_kek_rewraps_the_key_rows_only() -> None:
    ring = Keyring({1: KEY_1}, 1)
    sealed = ring.seal(PLAINTEXT, AAD)
    new_rows = Keyring.unwrap(KEK, ring.wrap(KEK), 1).wrap(NEW_KEK)
    assert Keyring.unwrap(NEW_KEK, new_rows, 1).unseal(sealed, AAD) == PLAINTEXT
    with pytest.raises(WrongEncryptionKey):
        Keyring.unwrap(KEK, new_rows, 1)


def test_wrap_key_of_unknown_id_is_refused() -> None:
    raises_vault_error(lambda: Keyring({1: KEY_1}, 1).wrap_key(KEK, 2), KEY_1, KEK)


# -- rotation ------------------------------------------------------------------------------------------


def test_generate_and_with_new_active_key() -> None:
    ring = Keyring.generate()
    assert ring.unseal(ring.seal(b"", AAD), AAD) == b""
    assert ring.key_ids == (1,)
    assert ring.active_id == 1
    new_ring, new_id = ring.with_new_active_key()
    assert new_id == 2
    assert new_ring.active_id == 2
    assert new_ring.key_ids == (1, 2)
    assert ring.key_ids == (1,)  # the old keyring is unchanged
    assert sealed_key_id(new_ring.seal(PLAINTEXT, AAD)) == 2


def test_two_generated_keyrings_have_different_keys() -> None:
    sealed = Keyring.generate().seal(PLAINTEXT, AAD)
    raises_vault_error(lambda: Keyring.generate().unseal(sealed, AAD), PLAINTEXT)


def test_no_key_id_after_the_last() -> None:
    ring = Keyring({MAX_KEY_ID: KEY_1}, MAX_KEY_ID)
    raises_vault_error(ring.with_new_active_key, KEY_1)


def test_reseal_moves_a_secret_to_the_new_data_key() -> None:
    old = Keyring({1: KEY_1}, 1)
    new, new_id = old.with_new_active_key()
    sealed = old.seal(PLAINTEXT, AAD)
    moved = reseal(sealed, AAD, old, new)
    assert sealed_key_id(moved) == new_id
    assert new.unseal(moved, AAD) == PLAINTEXT
    error = raises_vault_error(lambda: old.unseal(moved, AAD), PLAINTEXT, KEY_1)
    assert f"data key {new_id}" in str(error)
    # Still bound to where it is stored.
    raises_vault_error(lambda: new.unseal(moved, secret_aad("global", None, None, "DEPLOY_TOKEN")))


def test_reseal_is_a_no_op_for_a_value_already_under_the_new_key() -> None:
    old = Keyring({1: KEY_1}, 1)
    new, _ = old.with_new_active_key()
    moved = reseal(old.seal(PLAINTEXT, AAD), AAD, old, new)
    assert reseal(moved, AAD, old, new) is moved


def test_reseal_refuses_what_cannot_be_opened() -> None:
    old = Keyring({1: KEY_1}, 1)
    new, _ = old.with_new_active_key()
    sealed = old.seal(PLAINTEXT, AAD)
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    raises_vault_error(lambda: reseal(altered, AAD, old, new), PLAINTEXT, KEY_1)
    moved = reseal(sealed, AAD, old, new)
    altered_moved = moved[:-1] + bytes([moved[-1] ^ 1])
    raises_vault_error(lambda: reseal(altered_moved, AAD, old, new), PLAINTEXT, KEY_1)
    other_aad = secret_aad("pipeline", "default", "build-app", "OTHER")
    raises_vault_error(lambda: reseal(sealed, other_aad, old, new), PLAINTEXT, KEY_1)


def test_reseal_after_the_old_key_was_dropped_from_the_old_keyring() -> None:
    # A resumed rotation may hold keyrings built later: the value opens with whichever keyring has its key.
    ring = Keyring({1: KEY_1, 2: KEY_2}, 2)
    sealed = Keyring({1: KEY_1}, 1).seal(PLAINTEXT, AAD)
    new, new_id = ring.with_new_active_key()
    moved = reseal(sealed, AAD, Keyring({2: KEY_2}, 2), new)
    assert sealed_key_id(moved) == new_id
    assert new.unseal(moved, AAD) == PLAINTEXT


def test_without_key_retires_an_old_key() -> None:
    ring, _ = Keyring({1: KEY_1}, 1).with_new_active_key()
    sealed = ring.seal(PLAINTEXT, AAD)
    retired = ring.without_key(1)
    assert retired.key_ids == (2,)
    assert retired.unseal(sealed, AAD) == PLAINTEXT
    with pytest.raises(InvalidValue):
        ring.without_key(2)
    raises_vault_error(lambda: retired.without_key(1))


def test_one_keyring_shared_by_threads() -> None:
    ring = Keyring({1: KEY_1, 2: KEY_2}, 2)
    failures: list[str] = []

    def work(n: int) -> None:
        aad = secret_aad("pipeline", "default", f"p{n}", "X")
        for i in range(500):
            value = f"{n}-{i}".encode()
            if ring.unseal(ring.seal(value, aad), aad) != value:
                failures.append(f"{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_errors_are_vault_errors() -> None:
    assert issubclass(WrongEncryptionKey, VaultError)
