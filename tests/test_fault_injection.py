"""Failures between writing content and committing its row leave nothing visible."""

from __future__ import annotations

import errno
import os
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import StoreFactory, blob_files, staging_files

from objstore import ObjectNotFound, ObjStore, ObjStoreError, StorageError
from objstore.stores.content import ContentStore
from objstore.stores.objects import ObjectStore

LARGE = os.urandom(300_000)


class Boom(Exception):
    pass


def _assert_nothing_visible(store: ObjStore, key: str) -> None:
    objects = store.pipeline("default", "p").objects
    with pytest.raises(ObjectNotFound):
        objects.get(key)
    assert key not in [o.key for o in objects.list()]


@pytest.mark.parametrize(
    ("value", "path"),
    [(b"small", "transaction"), (b"small", "full pipeline"), (LARGE, "transaction")],
    ids=["inline", "inline-full-pipeline", "blob"],
)
def test_exception_between_blob_write_and_commit(
    make_store: StoreFactory, data_dir: Path, monkeypatch: pytest.MonkeyPatch, value: bytes, path: str
) -> None:
    store = make_store(object_store={"pipeline_object_limit": 2})
    objects = store.pipeline("default", "p").objects
    if path == "full pipeline":
        for key in ("a", "b", "c"):  # the third put evicts: the pipeline is known to be full
            objects.put(key, b"v")
    before = [o.key for o in objects.list()]

    def fail(self: ObjectStore, conn: object, scope: int, count: int, oldest: object = None) -> list[str]:
        raise Boom("injected after the insert, before the commit")

    if path == "transaction":
        # A small new value is normally one atomic statement, with no window to break into: force the
        # full transaction to test its window.
        monkeypatch.setattr(ObjectStore, "_put_inline", lambda *args: None)
    monkeypatch.setattr(ObjectStore, "_enforce_limit", fail)
    with pytest.raises(Boom):
        objects.put("k", value)
    monkeypatch.undo()
    _assert_nothing_visible(store, "k")
    assert [o.key for o in objects.list()] == before  # nothing evicted either
    assert staging_files(data_dir) == []
    store.collect_garbage(timedelta(0))
    assert blob_files(data_dir) == [] and store.check().ok
    # The store still works, and the same put now succeeds.
    objects.put("k", value)
    assert objects.get("k") == value


def test_exception_while_publishing(store: ObjStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: ContentStore, content: object) -> None:
        raise Boom("injected while publishing")

    monkeypatch.setattr(ContentStore, "publish", fail)
    with pytest.raises(Boom):
        store.pipeline("default", "p").objects.put("k", LARGE)
    monkeypatch.undo()
    _assert_nothing_visible(store, "k")
    assert staging_files(data_dir) == [] and blob_files(data_dir) == []


def test_disk_full_while_writing_content(
    store: ObjStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.pipeline("default", "p").objects.put("before", LARGE[:1000])
    real_write = os.write
    written = 0

    def write(fd: int, data: bytes) -> int:
        nonlocal written
        if written + len(data) > 100_000:  # the disk fills up part-way through the content
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written += len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(StorageError, match=r"(?i)disk is full") as raised:
        store.pipeline("default", "p").objects.put("k", LARGE)
    monkeypatch.undo()
    assert isinstance(raised.value, ObjStoreError)
    _assert_nothing_visible(store, "k")
    assert staging_files(data_dir) == [] and blob_files(data_dir) == []
    assert store.pipeline("default", "p").objects.get("before") == LARGE[:1000]


def test_content_removed_by_gc_mid_put_is_republished(
    store: ObjStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A collection running between a put's publish and its transaction removes the (still unreferenced)
    # content; the put must notice inside its transaction and publish it again.
    original = ContentStore.publish

    def publish_then_collect(self: ContentStore, content: object) -> None:
        original(self, content)  # type: ignore[arg-type]
        assert store.collect_garbage(timedelta(0)).blobs_removed == 1

    monkeypatch.setattr(ContentStore, "publish", publish_then_collect)
    store.pipeline("default", "p").objects.put("k", LARGE)
    monkeypatch.undo()
    assert store.pipeline("default", "p").objects.get("k") == LARGE
    assert store.check().ok
