"""The secret vault through the public API: sealing, scopes, keys, rotation, masking, hygiene."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import StoreFactory

from objstore import (
    AlreadyExists,
    InvalidName,
    InvalidValue,
    ObjStore,
    SecretNotFound,
    VaultError,
    WrongEncryptionKey,
)
from objstore.config import Settings
from objstore.stores.secrets import MAX_SECRET_BYTES
from tests.databases import dump, run_sql, vault_key

KEY = "k3y-for-tests-0123456789abcdefgh"  # exactly 32 bytes
OTHER_KEY = "another-key-0123456789abcdefghij"
VALUE = "pl41nt3xt-s3cr3t-value-9f8e7d"  # distinctive, to search for in files and messages


def keyed(make_store: StoreFactory, key: str = KEY, **overrides: Any) -> ObjStore:
    return make_store(secret_store={"sqlite": {"encryption_key": key}}, **overrides)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        b"",
        b"\x00",
        bytes(range(256)),
        "line one\nline two\r\nline three\n",
        "ünïcødé ✓ 秘密",
        b"\xff\xfe not utf-8",
        "m" * MAX_SECRET_BYTES,
    ],
    ids=["empty", "one", "empty-bytes", "nul", "binary", "multiline", "unicode", "invalid-utf8", "maximum"],
)
def test_round_trip_returns_what_was_put(make_store: StoreFactory, value: str | bytes) -> None:
    secrets = keyed(make_store).pipeline("default", "p").secrets
    secrets.put("S", value)
    got = secrets.get("S")
    assert got == value and type(got) is type(value)


def test_one_byte_over_the_limit_is_refused(make_store: StoreFactory) -> None:
    secrets = keyed(make_store).pipeline("default", "p").secrets
    with pytest.raises(InvalidValue, match=str(MAX_SECRET_BYTES)):
        secrets.put("S", b"m" * (MAX_SECRET_BYTES + 1))
    assert secrets.list() == []


def test_put_needs_overwrite_and_list_shows_no_values(make_store: StoreFactory) -> None:
    store = keyed(make_store)
    secrets = store.pipeline("default", "p").secrets
    first = secrets.put("DEPLOY_TOKEN", VALUE)
    with pytest.raises(AlreadyExists, match="overwrite"):
        secrets.put("DEPLOY_TOKEN", "other")
    assert secrets.get("DEPLOY_TOKEN") == VALUE
    second = secrets.put("DEPLOY_TOKEN", "other", overwrite=True)
    assert secrets.get("DEPLOY_TOKEN") == "other"
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    secrets.put("A_FIRST", b"x")
    assert [s.name for s in secrets.list()] == ["A_FIRST", "DEPLOY_TOKEN"]
    assert VALUE not in repr(secrets.list()) and "other" not in repr(secrets.list())
    secrets.delete("A_FIRST")
    with pytest.raises(SecretNotFound):
        secrets.get("A_FIRST")
    with pytest.raises(SecretNotFound):
        secrets.delete("A_FIRST")
    with pytest.raises(InvalidName):
        secrets.put("bad name", "v")
    with pytest.raises(InvalidValue):
        secrets.put("N", 42)  # type: ignore[arg-type]


def test_scopes_are_separate(make_store: StoreFactory) -> None:
    store = keyed(make_store)
    store.pipeline("a", "p").secrets.put("S", "a/p")
    store.pipeline("a", "q").secrets.put("S", "a/q")
    store.pipeline("b", "p").secrets.put("S", "b/p")
    store.global_secrets.put("S", "global")
    assert store.pipeline("a", "p").secrets.get("S") == "a/p"
    assert store.pipeline("a", "q").secrets.get("S") == "a/q"
    assert store.pipeline("b", "p").secrets.get("S") == "b/p"
    assert store.global_secrets.get("S") == "global"


def test_global_allow_list_is_full_match_and_deny_by_default(make_store: StoreFactory) -> None:
    store = keyed(make_store)
    store.global_secrets.put("NPM_TOKEN", VALUE, namespaces=["team-*"])
    store.global_secrets.put("CLOSED", "nobody")
    assert store.pipeline("team-a", "build").secrets.get_global("NPM_TOKEN") == VALUE
    for namespace in ("x-team-a", "team", "TEAM-a"):
        with pytest.raises(VaultError, match="may not read") as refused:
            store.pipeline(namespace, "build").secrets.get_global("NPM_TOKEN")
        assert VALUE not in str(refused.value)
    with pytest.raises(VaultError):
        store.pipeline("team-a", "build").secrets.get_global("CLOSED")
    with pytest.raises(InvalidName):
        store.global_secrets.put("X", "v", namespaces="team-*")  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        store.global_secrets.put("X", "v", namespaces=["team a"])


def _secret_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.iterdir() if p.name.startswith("secrets.db")]


def test_no_plaintext_in_any_file(make_store: StoreFactory, data_dir: Path, engine: str) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("S", VALUE)
    store.global_secrets.put("G", VALUE.encode(), namespaces=["*"])
    store.notices.flush()  # the secret_written events too, which the engine writes in batches
    if engine == "sqlite":
        files = _secret_files(data_dir)
        assert {p.name for p in files} >= {"secrets.db", "secrets.db-wal"}
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert VALUE.encode() not in content, path
            assert KEY.encode() not in content, path
    rows = repr(dump(store.secret_db, "secrets", "vault_keys") + dump(store.server_db, "events")).encode()
    assert b"secret_written" in rows and VALUE.encode() not in rows and KEY.encode() not in rows


@pytest.mark.sqlite_only
def test_file_modes_under_umask_022(make_store: StoreFactory, data_dir: Path) -> None:
    old = os.umask(0o022)
    try:
        keyed(make_store).pipeline("default", "p").secrets.put("S", VALUE)
    finally:
        os.umask(old)
    for path in _secret_files(data_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_ciphertext_moved_to_another_row_does_not_open(make_store: StoreFactory, data_dir: Path) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("A", VALUE)
    store.pipeline("default", "p").secrets.put("B", "b")
    store.pipeline("default", "q").secrets.put("A", "q")
    store.global_secrets.put("A", "g", namespaces=["*"])
    ((sealed,),) = run_sql(store.secret_db, "SELECT sealed FROM secrets WHERE pipeline = 'p' AND name = 'A'")
    run_sql(
        store.secret_db,
        "UPDATE secrets SET sealed = :sealed WHERE name = 'B' OR pipeline = 'q' OR scope = 'global'",
        {"sealed": sealed},
    )
    for read in (
        lambda: store.pipeline("default", "p").secrets.get("B"),
        lambda: store.pipeline("default", "q").secrets.get("A"),
        lambda: store.global_secrets.get("A"),
    ):
        with pytest.raises(VaultError) as refused:
            read()
        assert VALUE not in str(refused.value)
    assert store.pipeline("default", "p").secrets.get("A") == VALUE


def test_tampered_ciphertext_is_a_typed_error(make_store: StoreFactory, data_dir: Path) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("A", VALUE)
    ((sealed,),) = run_sql(store.secret_db, "SELECT sealed FROM secrets")
    sealed = bytes(sealed)
    for position in (0, 3, 10, len(sealed) // 2, len(sealed) - 1):
        flipped = bytearray(sealed)
        flipped[position] ^= 0x01
        run_sql(store.secret_db, "UPDATE secrets SET sealed = :sealed", {"sealed": bytes(flipped)})
        with pytest.raises(VaultError):
            store.pipeline("default", "p").secrets.get("A")
    run_sql(store.secret_db, "UPDATE secrets SET sealed = :sealed", {"sealed": sealed[:20]})
    with pytest.raises(VaultError):
        store.pipeline("default", "p").secrets.get("A")


def test_no_key_configured_objects_work_secrets_explain(make_store: StoreFactory, engine: str) -> None:
    store = make_store()
    store.pipeline("default", "p").objects.put("k", b"v")
    with pytest.raises(VaultError, match=f"OBJSTORE_SECRET_STORE__{engine.upper()}__ENCRYPTION_KEY"):
        store.pipeline("default", "p").secrets.put("S", "v")
    with pytest.raises(VaultError, match="no encryption key"):
        store.global_secrets.list()


def test_default_key_refused_unless_development(make_store: StoreFactory) -> None:
    default = "changemechangemechangemechangeme"
    store = keyed(make_store, default)
    with pytest.raises(VaultError, match="well-known default key"):
        store.pipeline("default", "p").secrets.put("S", "v")
    store.close()
    allowed = keyed(make_store, default, development={"default_encryption": True})
    allowed.pipeline("default", "p").secrets.put("S", "v")
    assert allowed.pipeline("default", "p").secrets.get("S") == "v"


def test_wrong_key_fails_at_open_and_changes_nothing(make_store: StoreFactory, data_dir: Path) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("S", VALUE)
    tables = ("secrets", "vault_keys", "events", "objects", "runs")
    before = dump(store.secret_db, *tables)
    with pytest.raises(WrongEncryptionKey) as refused:
        ObjStore(Settings.for_directory(data_dir, secret_store=vault_key(OTHER_KEY)))
    assert OTHER_KEY not in repr(refused.value) and KEY not in repr(refused.value)
    assert dump(store.secret_db, *tables) == before


def test_rotate_encryption_key(make_store: StoreFactory, data_dir: Path) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("S", VALUE)
    assert store.rotate_encryption_key(OTHER_KEY) is True
    assert store.pipeline("default", "p").secrets.get("S") == VALUE  # this handle follows the new key
    assert store.rotate_encryption_key(OTHER_KEY) is False  # the same key again: nothing to do
    store.close()
    with pytest.raises(WrongEncryptionKey):
        ObjStore(Settings.for_directory(data_dir, secret_store=vault_key(KEY)))
    with ObjStore(Settings.for_directory(data_dir, secret_store=vault_key(OTHER_KEY))) as again:
        assert again.pipeline("default", "p").secrets.get("S") == VALUE


def test_interrupted_key_rotation_leaves_the_old_key_valid(
    make_store: StoreFactory, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("S", VALUE)
    from objstore import keyring as keyring_module

    def crash(self: object, kek: object) -> dict[int, bytes]:
        raise RuntimeError("crash while rewrapping")

    monkeypatch.setattr(keyring_module.Keyring, "wrap", crash)
    with pytest.raises(RuntimeError):
        store.rotate_encryption_key(OTHER_KEY)
    monkeypatch.undo()
    store.close()
    with ObjStore(Settings.for_directory(data_dir, secret_store=vault_key(KEY))) as again:
        assert again.pipeline("default", "p").secrets.get("S") == VALUE
        assert again.rotate_encryption_key(OTHER_KEY) is True  # running it again completes


def test_rotate_data_key_reseals_everything_resumably(
    make_store: StoreFactory, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = keyed(make_store)
    values = {f"S{i:03d}": f"value-{i}" for i in range(25)}
    for name, value in values.items():
        store.pipeline("default", "p").secrets.put(name, value)
    store.global_secrets.put("G", VALUE, namespaces=["default"])
    from objstore.stores import rotation

    calls = 0
    real_reseal = rotation.reseal

    def crash_on_third_batch(*args: Any) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 21:
            raise RuntimeError("crash mid-rotation")
        return real_reseal(*args)

    monkeypatch.setattr(rotation, "reseal", crash_on_third_batch)
    with pytest.raises(RuntimeError):
        store.rotate_data_key(batch_size=10)
    monkeypatch.undo()
    store.close()
    again = keyed(make_store)
    secrets = again.pipeline("default", "p").secrets
    assert {name: secrets.get(name) for name in values} == values  # readable mid-rotation
    assert again.rotate_data_key(batch_size=10) == 26  # every secret moves to the newest key
    assert again.rotate_data_key(batch_size=10) == 26
    assert {name: secrets.get(name) for name in values} == values
    assert again.pipeline("default", "p").secrets.get_global("G") == VALUE
    assert run_sql(again.secret_db, "SELECT count(DISTINCT key_id) FROM secrets") == [(1,)]
    assert run_sql(again.secret_db, "SELECT count(*) FROM vault_keys") == [(1,)]  # retired keys removed


def test_a_store_follows_data_key_rotations_made_by_another(make_store: StoreFactory) -> None:
    """Another process (here: another store on the same databases) rotates the data key twice, which
    also retires the key this store opened with: it still reads, writes and masks everything."""
    rotating, behind = keyed(make_store), keyed(make_store)
    rotating.pipeline("default", "p").secrets.put("OLD", VALUE)
    behind.global_secrets.put("G", "global-value", namespaces=["default"])
    opened_with = behind.secrets.keyring.active_id
    assert rotating.rotate_data_key() == 2 and rotating.rotate_data_key() == 2
    assert opened_with not in [row[0] for row in run_sql(rotating.secret_db, "SELECT key_id FROM vault_keys")]
    secrets = behind.pipeline("default", "p").secrets
    assert secrets.get("OLD") == VALUE  # sealed under a key this store did not hold
    assert secrets.get_global("G") == "global-value"
    secrets.put("NEW", "written-after-rotation")  # sealed under the vault's active key, not a retired one
    active = rotating.secrets.keyring.active_id
    assert run_sql(rotating.secret_db, "SELECT DISTINCT key_id FROM secrets") == [(active,)]
    assert rotating.pipeline("default", "p").secrets.get("NEW") == "written-after-rotation"
    assert behind.mask(f"{VALUE} and written-after-rotation") == "**** and ****"


def test_a_put_under_a_replaced_key_is_sealed_again_under_the_active_one(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation elsewhere stopped half-way: the old key is no longer active but still held. A put
    from a store that opened before it must not seal new values under the old key."""
    rotating, behind = keyed(make_store), keyed(make_store)
    behind.pipeline("default", "p").secrets.put("FIRST", "one")
    from objstore.stores import rotation

    def crash(*args: Any) -> bytes:
        raise RuntimeError("crash before the first batch")

    monkeypatch.setattr(rotation, "reseal", crash)
    with pytest.raises(RuntimeError):
        rotating.rotate_data_key()
    monkeypatch.undo()
    keys = run_sql(rotating.secret_db, "SELECT key_id, active FROM vault_keys ORDER BY key_id")
    assert len(keys) == 2 and not keys[0][1] and keys[1][1]  # old key kept, new key active
    behind.pipeline("default", "p").secrets.put("SECOND", "two")
    assert run_sql(rotating.secret_db, "SELECT key_id FROM secrets WHERE name = 'SECOND'") == [(keys[1][0],)]
    assert rotating.pipeline("default", "p").secrets.get("SECOND") == "two"
    assert behind.pipeline("default", "p").secrets.get("FIRST") == "one"


def test_mask(make_store: StoreFactory) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("S", VALUE)
    store.pipeline("default", "q").secrets.put("Q", "other-pipeline-secret")
    store.pipeline("default", "p").secrets.put("SHORT", "abc")
    store.global_secrets.put("G", "global-secret-value", namespaces=["default"])
    store.global_secrets.put("H", "hidden-global-value", namespaces=["elsewhere"])
    text = f"{VALUE} other-pipeline-secret global-secret-value hidden-global-value abc"
    assert store.mask(text) == "**** **** **** **** abc"  # shorter than 4: not masked (documented)
    assert store.mask(text, namespace="default", pipeline="p") == (
        "**** other-pipeline-secret **** hidden-global-value abc"
    )
    multiline = "BEGIN KEY\nline-two-of-it\nEND KEY"
    store.pipeline("default", "p").secrets.put("ML", multiline)
    assert store.mask(f"log: {multiline} done") == "log: **** done"
    with pytest.raises(InvalidValue):
        store.mask("x", namespace="default")


def test_values_and_keys_never_reach_reprs_errors_or_debug_logs(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "sqlalchemy.engine", "alembic"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    store = keyed(make_store)
    secrets = store.pipeline("default", "p").secrets
    secrets.put("S", VALUE)
    with pytest.raises(AlreadyExists) as exists:
        secrets.put("S", VALUE)
    texts = [
        repr(store),
        str(store),
        repr(store.settings),
        str(store.settings),
        repr(secrets),
        repr(store.secrets.keyring),
    ]
    error: BaseException | None = exists.value
    while error is not None:
        texts += [repr(error), str(error)]
        error = error.__cause__ or error.__context__
    texts += [record.getMessage() for record in caplog.records]
    for text in texts:
        assert VALUE not in text and KEY not in text


@pytest.mark.parametrize("bad", ["changemechangemechangemechangeme", "<run: objstore init-config>", "short"])
def test_rotation_refuses_unusable_new_keys(make_store: StoreFactory, bad: str) -> None:
    store = keyed(make_store)
    store.pipeline("default", "p").secrets.put("S", VALUE)
    with pytest.raises(VaultError) as refused:
        store.rotate_encryption_key(bad)
    assert bad not in str(refused.value)
    assert store.pipeline("default", "p").secrets.get("S") == VALUE
    assert store.rotate_encryption_key(OTHER_KEY) is True  # the vault still rotates afterwards


@pytest.mark.parametrize("bad", ["bad name", "", "x" * 129, "slash/ed", None, 7])
def test_get_with_an_invalid_name_is_invalid_name_not_not_found(
    make_store: StoreFactory, bad: object
) -> None:
    secrets = keyed(make_store).pipeline("default", "p").secrets
    with pytest.raises(InvalidName):
        secrets.get(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("step", ["after the new key", "between batches", "before retiring old keys"])
def test_data_key_rotation_survives_a_crash_after_each_step(
    make_store: StoreFactory, data_dir: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    store = keyed(make_store)
    values = {f"S{i:02d}": f"value-{i}" for i in range(12)}
    for name, value in values.items():
        store.pipeline("default", "p").secrets.put(name, value)
    from objstore.db.database import Database

    real_write = Database.write
    writes = 0
    crash_at = {"after the new key": 2, "between batches": 3, "before retiring old keys": 5}[step]

    def crashing_write(self: Database, work: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        if writes == crash_at:
            raise RuntimeError(f"crash {step}")
        return real_write(self, work, **kwargs)

    monkeypatch.setattr(Database, "write", crashing_write)
    with pytest.raises(RuntimeError):
        store.rotate_data_key(batch_size=5)  # writes: 1 new key, 2-4 batches of 5/5/2, 5 retire
    monkeypatch.undo()
    store.close()
    again = keyed(make_store)
    secrets = again.pipeline("default", "p").secrets
    assert {name: secrets.get(name) for name in values} == values  # every secret readable
    assert again.rotate_data_key(batch_size=5) == len(values)  # running it again completes
    assert {name: secrets.get(name) for name in values} == values
    assert run_sql(again.secret_db, "SELECT count(DISTINCT key_id) FROM secrets") == [(1,)]
    assert run_sql(again.secret_db, "SELECT count(*) FROM vault_keys") == [(1,)]
