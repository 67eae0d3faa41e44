"""The contract every blob backend must pass.

A backend's test module subclasses :class:`BlobBackendContract` in a ``Test...`` class and overrides the
``backend`` fixture to yield a fresh, empty backend::

    class TestFilesystemBackend(BlobBackendContract):
        @pytest.fixture
        def backend(self, tmp_path: Path) -> Iterator[BlobBackend]:
            store = FilesystemBlobBackend(tmp_path / "blobs")
            yield store
            store.close()

Staging leftovers are counted through ``remove_stale_staging`` with a cutoff in the future, which every
backend implements, so the suite needs no knowledge of where a backend stages.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from objstore.blobs.base import BlobBackend, BlobMissing, StagedBlob
from objstore.blobs.verify import read_verified
from objstore.errors import InvalidValue, ObjStoreError, StorageError

MIB = 1 << 20

BAD_ADDRESSES = [
    "",
    "abc",
    "a" * 63,
    "a" * 65,
    "A" * 64,
    "g" * 64,
    "../" + "a" * 61,
    "../../etc/passwd",
    "a" * 64 + "\n",
    "/" + "a" * 63,
    "aa/" + "a" * 61,
]


class Boom(Exception):
    """Raised by a caller's chunk iterator; must reach the caller unchanged."""


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def chunked(data: bytes, sizes: Iterable[int]) -> Iterator[bytes]:
    """Split ``data`` into chunks of the given sizes, cycling; the last chunk takes the remainder."""
    pos = 0
    sizes = list(sizes)
    i = 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        yield data[pos : pos + step]
        pos += step
        i += 1


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def far_future() -> datetime:
    return datetime.now(UTC) + timedelta(days=3650)


def read_back(backend: BlobBackend, digest: str) -> bytes:
    with backend.open(digest) as reader:
        return reader.read()


class BlobBackendContract:
    """Tests shared by all blob backends; subclasses provide the ``backend`` fixture."""

    @pytest.fixture
    def backend(self) -> Iterator[BlobBackend]:
        raise NotImplementedError("override the `backend` fixture in the backend's test class")

    # -- helpers ---------------------------------------------------------------------------------------

    def put(self, backend: BlobBackend, data: bytes) -> StagedBlob:
        staged = backend.stage([data])
        try:
            backend.publish(staged)
        finally:
            backend.discard(staged)
        return staged

    def leftovers(self, backend: BlobBackend) -> int:
        """How many staging leftovers exist (removes them while counting)."""
        return backend.remove_stale_staging(far_future())

    # -- round trips -----------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("size", "chunk_sizes"),
        [
            pytest.param(0, [1], id="empty"),
            pytest.param(1, [1], id="one-byte"),
            pytest.param(MIB, [MIB], id="1MiB-one-chunk"),
            pytest.param(MIB, [4096], id="1MiB-4KiB-chunks"),
            pytest.param(MIB * 7 // 2, [7919, 1, 65537, 333333], id="3.5MiB-odd-chunks"),
        ],
    )
    def test_round_trip(self, backend: BlobBackend, size: int, chunk_sizes: list[int]) -> None:
        data = payload(size, seed=size)
        staged = backend.stage(chunked(data, chunk_sizes))
        assert staged.sha256 == sha(data)
        assert staged.size == size
        backend.publish(staged)
        backend.discard(staged)
        assert backend.exists(staged.sha256)
        assert read_back(backend, staged.sha256) == data
        assert read_verified(backend.open(staged.sha256), staged.sha256, size, "test blob") == data
        assert self.leftovers(backend) == 0

    def test_empty_iterable_and_empty_chunks(self, backend: BlobBackend) -> None:
        staged = backend.stage([])
        assert (staged.sha256, staged.size) == (sha(b""), 0)
        backend.discard(staged)
        staged = backend.stage([b"", b"ab", b"", b"c", b""])
        assert (staged.sha256, staged.size) == (sha(b"abc"), 3)
        backend.publish(staged)
        backend.discard(staged)
        assert read_back(backend, staged.sha256) == b"abc"

    def test_bytes_like_chunks(self, backend: BlobBackend) -> None:
        chunks: list[bytes] = [b"ab", bytearray(b"cd"), memoryview(b"xefx")[1:3]]  # type: ignore[list-item]
        staged = backend.stage(chunks)
        assert (staged.sha256, staged.size) == (sha(b"abcdef"), 6)
        backend.discard(staged)

    def test_read_in_small_pieces(self, backend: BlobBackend) -> None:
        data = payload(10_000, seed=3)
        staged = self.put(backend, data)
        pieces = []
        with backend.open(staged.sha256) as reader:
            while piece := reader.read(777):
                pieces.append(piece)
        assert b"".join(pieces) == data

    # -- visibility ------------------------------------------------------------------------------------

    def test_nothing_visible_before_publish(self, backend: BlobBackend) -> None:
        data = payload(5000, seed=1)
        staged = backend.stage([data])
        assert not backend.exists(staged.sha256)
        assert backend.stat(staged.sha256) is None
        assert list(backend.iter_blobs()) == []
        with pytest.raises(BlobMissing):
            backend.open(staged.sha256)
        backend.publish(staged)
        assert backend.exists(staged.sha256)
        assert [b.sha256 for b in backend.iter_blobs()] == [staged.sha256]
        backend.discard(staged)

    def test_publish_is_idempotent(self, backend: BlobBackend) -> None:
        data = payload(3000, seed=2)
        first = backend.stage([data])
        backend.publish(first)
        backend.publish(first)
        second = backend.stage(chunked(data, [100]))
        assert (second.sha256, second.size) == (first.sha256, first.size)
        backend.publish(second)
        backend.discard(first)
        backend.discard(second)
        assert read_back(backend, first.sha256) == data
        assert [b.sha256 for b in backend.iter_blobs()] == [first.sha256]
        assert self.leftovers(backend) == 0

    def test_publish_again_after_content_was_deleted(self, backend: BlobBackend) -> None:
        # The object store re-publishes when garbage collection removed content before its commit.
        data = payload(4321, seed=4)
        staged = backend.stage([data])
        backend.publish(staged)
        assert backend.delete(staged.sha256)
        assert not backend.exists(staged.sha256)
        backend.publish(staged)
        backend.discard(staged)
        assert read_back(backend, staged.sha256) == data

    def test_discard_removes_staging_leftovers(self, backend: BlobBackend) -> None:
        staged = backend.stage([b"left over"])
        backend.discard(staged)
        backend.discard(staged)  # harmless when already gone
        assert self.leftovers(backend) == 0
        assert not backend.exists(staged.sha256)

    def test_discard_after_publish_keeps_content(self, backend: BlobBackend) -> None:
        staged = self.put(backend, b"kept")
        assert read_back(backend, staged.sha256) == b"kept"

    def test_publish_after_discard_fails(self, backend: BlobBackend) -> None:
        staged = backend.stage([b"gone"])
        backend.discard(staged)
        with pytest.raises(StorageError):
            backend.publish(staged)
        assert not backend.exists(staged.sha256)

    # -- delete, stat, listing -------------------------------------------------------------------------

    def test_delete(self, backend: BlobBackend) -> None:
        staged = self.put(backend, b"to delete")
        assert backend.delete(staged.sha256) is True
        assert backend.delete(staged.sha256) is False
        assert not backend.exists(staged.sha256)
        assert backend.stat(staged.sha256) is None
        with pytest.raises(BlobMissing):
            backend.open(staged.sha256)

    def test_stat(self, backend: BlobBackend) -> None:
        before = datetime.now(UTC) - timedelta(minutes=5)
        staged = self.put(backend, b"x" * 1234)
        info = backend.stat(staged.sha256)
        assert info is not None
        assert (info.sha256, info.size) == (staged.sha256, 1234)
        assert info.modified_at.utcoffset() == timedelta(0)
        assert before <= info.modified_at <= datetime.now(UTC) + timedelta(minutes=5)
        assert backend.stat(sha(b"never stored")) is None

    def test_iter_blobs_lists_exactly_the_published(self, backend: BlobBackend) -> None:
        published = {self.put(backend, payload(100 + i, seed=i)).sha256: 100 + i for i in range(20)}
        unpublished = backend.stage([b"staged only"])
        listed = {b.sha256: b.size for b in backend.iter_blobs()}
        assert listed == published
        for info in backend.iter_blobs():
            assert info.modified_at.utcoffset() == timedelta(0)
        backend.discard(unpublished)

    def test_iter_blobs_empty(self, backend: BlobBackend) -> None:
        assert list(backend.iter_blobs()) == []

    def test_open_missing(self, backend: BlobBackend) -> None:
        missing = sha(b"not there")
        with pytest.raises(BlobMissing, match=missing):
            backend.open(missing)
        assert not backend.exists(missing)

    # -- failures --------------------------------------------------------------------------------------

    @pytest.mark.parametrize("error", [Boom("caller failed"), OSError(5, "caller's own I/O error")])
    def test_iterator_error_propagates_unchanged(self, backend: BlobBackend, error: Exception) -> None:
        data = payload(3 * MIB, seed=9)

        def chunks() -> Iterator[bytes]:
            yield data[:MIB]
            yield data[MIB : 2 * MIB]
            raise error

        with pytest.raises(type(error)) as caught:
            backend.stage(chunks())
        assert caught.value is error
        assert not isinstance(caught.value, ObjStoreError)
        assert list(backend.iter_blobs()) == []
        assert not backend.exists(sha(data[: 2 * MIB]))
        assert self.leftovers(backend) == 0

    def test_non_bytes_chunk_rejected(self, backend: BlobBackend) -> None:
        with pytest.raises(InvalidValue):
            backend.stage([b"ok", "text", b"more"])  # type: ignore[list-item]
        assert self.leftovers(backend) == 0

    def test_remove_stale_staging(self, backend: BlobBackend) -> None:
        staged = backend.stage([b"abandoned by a crashed writer"])
        assert backend.remove_stale_staging(datetime.now(UTC) - timedelta(hours=1)) == 0
        assert backend.remove_stale_staging(far_future()) == 1
        assert backend.remove_stale_staging(far_future()) == 0
        with pytest.raises(StorageError):
            backend.publish(staged)
        backend.discard(staged)

    def test_remove_stale_staging_keeps_published_content(self, backend: BlobBackend) -> None:
        staged = backend.stage([b"published, not yet discarded"])
        backend.publish(staged)
        assert backend.remove_stale_staging(far_future()) == 1
        assert read_back(backend, staged.sha256) == b"published, not yet discarded"
        backend.discard(staged)

    def test_remove_stale_staging_needs_aware_datetime(self, backend: BlobBackend) -> None:
        with pytest.raises(InvalidValue):
            backend.remove_stale_staging(datetime(2020, 1, 1))  # naive on purpose

    @pytest.mark.parametrize("bad", BAD_ADDRESSES)
    def test_invalid_address_rejected(self, backend: BlobBackend, bad: str) -> None:
        for call in (backend.exists, backend.open, backend.delete, backend.stat):
            with pytest.raises(InvalidValue):
                call(bad)
        with pytest.raises(InvalidValue):
            backend.publish(StagedBlob(bad, 0, "token"))
        assert isinstance(InvalidValue("x"), ValueError)

    def test_name_and_repr(self, backend: BlobBackend) -> None:
        assert isinstance(backend.name, str)
        assert backend.name
        assert backend.name in repr(backend)
