"""Names: every invalid one raises InvalidName before any write; every valid one round-trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import StoreFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore import InvalidName, ObjStore
from objstore.names import validate_id, validate_key, validate_secret_name
from tests.databases import dump

ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
KEY_CHARS = ID_CHARS + "."
valid_ids = st.text(ID_CHARS, min_size=1, max_size=64)
segments = st.text(KEY_CHARS, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
valid_keys = st.lists(segments, min_size=1, max_size=8).map("/".join).filter(lambda k: len(k) <= 255)

VALID_KEY = re.compile(r"[A-Za-z0-9._/-]{1,255}")


def key_is_valid(key: str) -> bool:
    return VALID_KEY.fullmatch(key) is not None and all(s not in ("", ".", "..") for s in key.split("/"))


def files_snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "-shm" not in p.name}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> ObjStore:
    from objstore.config import Settings

    store = ObjStore(Settings.for_directory(tmp_path_factory.mktemp("names")))
    yield store  # type: ignore[misc]
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(namespace=valid_ids, pipeline=valid_ids, key=valid_keys)
def test_valid_names_round_trip(shared_store: ObjStore, namespace: str, pipeline: str, key: str) -> None:
    objects = shared_store.pipeline(namespace, pipeline).objects
    value = f"{namespace}|{pipeline}|{key}".encode()
    objects.put(key, value, overwrite=True)
    assert objects.get(key) == value
    assert objects.info(key).key == key


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_key_validation_matches_the_rules(key: str) -> None:
    if key_is_valid(key):
        assert validate_key(key) == key
    else:
        with pytest.raises(InvalidName, match="object key"):
            validate_key(key)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_id_and_secret_name_validation_match_the_rules(name: str) -> None:
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        assert validate_id(name, "namespace") == name
    else:
        with pytest.raises(InvalidName, match="namespace"):
            validate_id(name, "namespace")
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", name):
        assert validate_secret_name(name) == name
    else:
        with pytest.raises(InvalidName, match="secret name"):
            validate_secret_name(name)


invalid_keys = st.one_of(
    st.just(""),
    st.just("/leading"),
    st.just("trailing/"),
    st.just("a//b"),
    st.just("a/./b"),
    st.just("../etc/passwd"),
    st.just("."),
    st.just("x" * 256),
    st.text(min_size=1, max_size=40).filter(lambda k: not key_is_valid(k)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=invalid_keys)
def test_invalid_keys_write_nothing(make_store: StoreFactory, data_dir: Path, key: str) -> None:
    store = make_store()
    pipe = store.pipeline("default", "p")
    run = pipe.start_run()
    before = files_snapshot(data_dir), dump(store.object_db, "objects", "object_pipelines")
    for objects in (pipe.objects, run.objects):
        with pytest.raises(InvalidName):
            objects.put(key, b"value")
        with pytest.raises(InvalidName):
            objects.get(key)
        with pytest.raises(InvalidName):
            objects.delete(key)
    assert (files_snapshot(data_dir), dump(store.object_db, "objects", "object_pipelines")) == before
    store.close()


@pytest.mark.parametrize("bad", ["", "a" * 65, "has space", "dot.ted", "slash/ed", "ünï", None, 5])
def test_invalid_ids_raise_before_any_io(tmp_path: Path, bad: object) -> None:
    from objstore.config import Settings

    with ObjStore(Settings.for_directory(tmp_path / "d")) as store:
        before = files_snapshot(tmp_path)
        with pytest.raises(InvalidName):
            store.pipeline(bad, "p")  # type: ignore[arg-type]
        with pytest.raises(InvalidName):
            store.pipeline("default", bad)  # type: ignore[arg-type]
        assert files_snapshot(tmp_path) == before
