"""FilesystemBlobBackend: the shared blob contract plus layout, modes, disk-full and corruption."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from blob_contract import MIB, BlobBackendContract, payload, sha

from objstore import private_files
from objstore.blobs import filesystem as fs_module
from objstore.blobs import fsutil
from objstore.blobs.base import BlobBackend, StagedBlob
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.verify import VerifiedReader, read_verified
from objstore.errors import IntegrityError, InvalidValue, StorageError


class TestFilesystemContract(BlobBackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[BlobBackend]:
        store = FilesystemBlobBackend(tmp_path / "blobs")
        yield store
        store.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "blobs"


@pytest.fixture
def store(root: Path) -> FilesystemBlobBackend:
    return FilesystemBlobBackend(root)


def staging_files(root: Path) -> list[str]:
    staging = root / ".staging"
    return sorted(os.listdir(staging)) if staging.exists() else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def put(store: FilesystemBlobBackend, data: bytes) -> StagedBlob:
    staged = store.stage([data])
    store.publish(staged)
    store.discard(staged)
    return staged


# -- layout and modes ------------------------------------------------------------------------------------


def test_layout(store: FilesystemBlobBackend, root: Path) -> None:
    assert store.name == f"filesystem:{root}"
    staged = store.stage([b"hello"])
    temp = Path(staged.token)
    assert temp.parent == root / ".staging"
    assert temp.read_bytes() == b"hello"
    store.publish(staged)
    final = root / staged.sha256[:2] / staged.sha256
    assert final.read_bytes() == b"hello"
    assert temp.exists()  # publish keeps the temp file so it can publish again
    store.discard(staged)
    assert not temp.exists()
    assert staging_files(root) == []


def test_nothing_created_until_first_write(store: FilesystemBlobBackend, root: Path) -> None:
    assert not store.exists(sha(b"x"))
    assert list(store.iter_blobs()) == []
    assert store.remove_stale_staging(datetime.now(UTC)) == 0
    assert not root.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o277])
def test_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "new" / "blobs"
    store = FilesystemBlobBackend(root)
    old = os.umask(umask)
    try:
        staged = store.stage([b"secret-ish artifact"])
        temp_mode = mode(Path(staged.token))
        store.publish(staged)
        store.discard(staged)
    finally:
        os.umask(old)
    final = root / staged.sha256[:2] / staged.sha256
    assert temp_mode == 0o600
    assert mode(final) == 0o600
    for folder in (tmp_path / "new", root, root / ".staging", final.parent):
        assert mode(folder) == 0o700, folder


def test_modes_of_copy_fallback(
    store: FilesystemBlobBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "link", _failing(os.link, errno.EPERM))
    old = os.umask(0o022)
    try:
        staged = put(store, b"copied")
    finally:
        os.umask(old)
    assert mode(root / staged.sha256[:2] / staged.sha256) == 0o600


def test_preexisting_folder_mode_untouched(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o755)
    store = FilesystemBlobBackend(root)
    staged = put(store, b"x")
    assert mode(root) == 0o755
    assert mode(root / ".staging") == 0o700
    assert mode(root / staged.sha256[:2]) == 0o700


# -- durability ------------------------------------------------------------------------------------------


def test_fsync_order(store: FilesystemBlobBackend, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_fsync_dir, real_link = os.fsync, fsutil.fsync_dir, os.link

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def fsync_dir(path: Path | str) -> None:
        events.append(f"fsync-dir:{Path(path).relative_to(root.parent)}")
        real_fsync_dir(path)

    def link(src: Any, dst: Any) -> None:
        events.append("link")
        real_link(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    staged = store.stage([b"a", b"b"])
    assert events[-1] == "fsync"  # the staged file itself
    monkeypatch.undo()
    events.clear()
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(fsutil, "fsync_dir", fsync_dir)
    monkeypatch.setattr(fs_module, "fsync_dir", fsync_dir)
    monkeypatch.setattr(private_files, "fsync_dir", fsync_dir)  # where new folders are made durable
    store.publish(staged)
    shard = f"blobs/{staged.sha256[:2]}"
    # New shard: its name is made durable in the root first, then the link in the shard.
    assert events == ["fsync-dir:blobs", "link", f"fsync-dir:{shard}"]
    events.clear()
    store.publish(staged)
    assert events == []  # already there: nothing to do


# -- disk full and other OS errors -----------------------------------------------------------------------


def _failing(real: Callable[..., Any], code: int, *, after: int = 0) -> Callable[..., Any]:
    """A stand-in for ``real`` that raises OSError(code) from call number ``after + 1`` on."""
    calls = [0]

    def fail(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > after:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    return fail


def test_disk_full_while_writing(
    store: FilesystemBlobBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(3 * MIB)
    monkeypatch.setattr(os, "write", _failing(os.write, errno.ENOSPC, after=1))
    with pytest.raises(StorageError) as caught:
        store.stage([data[:MIB], data[MIB : 2 * MIB], data[2 * MIB :]])
    monkeypatch.undo()
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert "disk is full" in message
    assert "ENOSPC" in message
    assert str(root / ".staging") in message
    assert "blobs" in message
    assert staging_files(root) == []
    assert list(store.iter_blobs()) == []


def test_disk_full_on_fsync(
    store: FilesystemBlobBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fsync", _failing(os.fsync, errno.ENOSPC))
    with pytest.raises(StorageError, match="disk is full"):
        store.stage([b"data"])
    monkeypatch.undo()
    assert staging_files(root) == []


def test_disk_full_on_publish(
    store: FilesystemBlobBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = store.stage([b"data"])
    monkeypatch.setattr(os, "link", _failing(os.link, errno.ENOSPC))
    with pytest.raises(StorageError, match="disk is full") as caught:
        store.publish(staged)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert not store.exists(staged.sha256)
    store.publish(staged)  # retry works once space is back
    store.discard(staged)
    assert store.exists(staged.sha256)


def test_permission_error_message(store: FilesystemBlobBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "open", _failing(os.open, errno.EACCES))
    with pytest.raises(StorageError, match="permission denied") as caught:
        store.stage([b"x"])
    assert caught.value.errno == errno.EACCES


def test_staging_folder_removed_meanwhile(store: FilesystemBlobBackend, root: Path) -> None:
    put(store, b"first")
    os.rmdir(root / ".staging")
    staged = put(store, b"second")
    assert store.exists(staged.sha256)


# -- publish details -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EPERM, errno.EXDEV, errno.ENOTSUP])
def test_publish_without_hard_links(
    store: FilesystemBlobBackend, root: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    data = payload(MIB * 5 // 2, seed=5)
    staged = store.stage([data])
    monkeypatch.setattr(os, "link", _failing(os.link, code))
    store.publish(staged)
    assert staging_files(root) == [Path(staged.token).name]  # the copy's temp was renamed into place
    assert store.delete(staged.sha256)
    store.publish(staged)  # the temp file is still there, so publishing again works
    store.discard(staged)
    assert read_verified(store.open(staged.sha256), staged.sha256, staged.size, "copy") == data
    assert staging_files(root) == []


def test_publish_link_race_counts_as_success(
    store: FilesystemBlobBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = store.stage([b"raced"])
    real_exists = os.path.exists
    # Pretend the content was absent at the check, so the link meets the concurrent publisher's file.
    store.publish(staged)
    monkeypatch.setattr(
        os.path, "exists", lambda p: False if str(p).endswith(staged.sha256) else real_exists(p)
    )
    store.publish(staged)
    monkeypatch.undo()
    store.discard(staged)
    assert store.exists(staged.sha256)


def test_publish_after_gc_recreates_from_same_staged_blob(store: FilesystemBlobBackend, root: Path) -> None:
    staged = store.stage([b"collected too early"])
    store.publish(staged)
    final = root / staged.sha256[:2] / staged.sha256
    final.unlink()
    os.rmdir(final.parent)  # a GC that also prunes empty shard folders
    store.publish(staged)
    store.discard(staged)
    assert final.read_bytes() == b"collected too early"


def test_forged_token_refused(store: FilesystemBlobBackend, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    real = store.stage([b"do not touch"])
    for token in (str(victim), str(Path(real.token).parent / ".." / "x.tmp"), "relative.tmp", ""):
        forged = StagedBlob(real.sha256, real.size, token)
        with pytest.raises(InvalidValue):
            store.publish(forged)
        with pytest.raises(InvalidValue):
            store.discard(forged)
    assert victim.read_bytes() == b"do not touch"
    assert not store.exists(real.sha256)
    store.discard(real)


def test_traversal_address_touches_nothing(store: FilesystemBlobBackend, tmp_path: Path) -> None:
    outside = tmp_path / "data" / ("a" * 64)
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"x")
    with pytest.raises(InvalidValue):
        store.delete("../" + "a" * 61)
    assert outside.exists()


# -- listing and housekeeping ----------------------------------------------------------------------------


def test_iter_blobs_skips_foreign_files(store: FilesystemBlobBackend, root: Path) -> None:
    good = put(store, b"good")
    shard = root / good.sha256[:2]
    (shard / good.sha256.upper()).write_bytes(b"x")
    (shard / (good.sha256 + ".tmp")).write_bytes(b"x")
    wrong_shard = ("1" if good.sha256.startswith("0") else "0") * 64
    (shard / wrong_shard).write_bytes(b"x")  # unreachable through open(), so not listed either
    (root / good.sha256).write_bytes(b"x")  # not in a shard
    (root / "README").write_bytes(b"x")
    (root / "zz").mkdir()
    (root / "zz" / ("f" * 64)).write_bytes(b"x")
    (root / "ab").mkdir(exist_ok=True)
    (root / "ab" / ("ab" + "0" * 62)).mkdir()  # a folder with a blob's name
    staged = store.stage([b"staged"])
    assert [b.sha256 for b in store.iter_blobs()] == [good.sha256]
    store.discard(staged)


def test_remove_stale_staging_by_mtime(store: FilesystemBlobBackend, root: Path) -> None:
    old = store.stage([b"old"])
    new = store.stage([b"new"])
    an_hour_ago = time.time() - 3600
    os.utime(old.token, (an_hour_ago, an_hour_ago))
    cutoff = datetime.now(UTC) - timedelta(minutes=30)
    assert store.remove_stale_staging(cutoff) == 1
    assert staging_files(root) == [Path(new.token).name]
    store.discard(old)
    store.discard(new)


# -- corruption ------------------------------------------------------------------------------------------


def test_corrupted_file_detected(store: FilesystemBlobBackend, root: Path) -> None:
    data = payload(2 * MIB + 17, seed=8)
    staged = put(store, data)
    final = root / staged.sha256[:2] / staged.sha256
    damaged = bytearray(data)
    damaged[MIB] ^= 0x01
    final.write_bytes(damaged)
    raw = store.open(staged.sha256)
    with (
        VerifiedReader(raw, sha256=staged.sha256, size=staged.size, what="obj") as r,
        pytest.raises(IntegrityError, match=staged.sha256),
    ):
        while r.read(64 * 1024):
            pass
    final.write_bytes(data[:-1])
    with pytest.raises(IntegrityError, match="ends after"):
        read_verified(store.open(staged.sha256), staged.sha256, staged.size, "obj")
    final.write_bytes(data)
    assert read_verified(store.open(staged.sha256), staged.sha256, staged.size, "obj") == data


def test_short_writes_are_completed(store: FilesystemBlobBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def short_write(fd: int, data: Any) -> int:
        return real_write(fd, memoryview(data)[:1000])

    monkeypatch.setattr(os, "write", short_write)
    data = payload(100_000, seed=6)
    staged = store.stage([data[:50_000], data[50_000:]])
    monkeypatch.undo()
    store.publish(staged)
    store.discard(staged)
    assert read_verified(store.open(staged.sha256), staged.sha256, staged.size, "x") == data
