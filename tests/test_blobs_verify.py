"""VerifiedReader and read_verified: good content passes, damaged content raises IntegrityError at the end."""

from __future__ import annotations

import array
import hashlib
import io
import random
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from objstore.blobs.verify import VerifiedReader, read_verified
from objstore.errors import IntegrityError, InvalidValue

DATA = random.Random(42).randbytes(100_003)
SHA = hashlib.sha256(DATA).hexdigest()


class CountingRaw(io.BytesIO):
    """A raw stream that records read sizes and whether it was closed."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(-1 if size is None else size)
        return super().read(size)


class ReadOnlyRaw:
    """Has ``read`` and ``close`` only (no ``readinto``), like some HTTP response bodies."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)

    def close(self) -> None:
        self.closed = True


def reader(data: bytes, *, sha256: str = SHA, size: int = len(DATA)) -> VerifiedReader:
    return VerifiedReader(io.BytesIO(data), sha256=sha256, size=size, what="object ns/p/key")


def flipped(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x80
    return bytes(damaged)


def read_in(r: VerifiedReader, n: int) -> bytes:
    parts = []
    while part := r.read(n):
        parts.append(part)
    return b"".join(parts)


def readinto_in(r: VerifiedReader, n: int) -> bytes:
    out = bytearray()
    buf = bytearray(n)
    while got := r.readinto(buf):
        out += buf[:got]
    return bytes(out)


def buffered(r: VerifiedReader) -> bytes:
    wrapper = io.BufferedReader(r, 4096)
    try:
        return wrapper.read()
    finally:
        wrapper.detach()  # keep r open for the checks that follow


READ_STYLES: dict[str, Callable[[VerifiedReader], bytes]] = {
    "read()": lambda r: r.read(),
    "read(-1)": lambda r: r.read(-1),
    "read(None)": lambda r: r.read(None),
    "read(1)": lambda r: read_in(r, 1),
    "read(7)": lambda r: read_in(r, 7),
    "read(64KiB)": lambda r: read_in(r, 65536),
    "read(huge)": lambda r: read_in(r, 10**9),
    "readinto(13)": lambda r: readinto_in(r, 13),
    "readinto(1MiB)": lambda r: readinto_in(r, 1 << 20),
    "iterate": b"".join,
    "buffered": buffered,
}


# -- good content ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", READ_STYLES)
def test_correct_content_passes(style: str) -> None:
    with reader(DATA) as r:
        assert READ_STYLES[style](r) == DATA
        assert r.read() == b""  # verdict already given; no second check
        assert r.read(10) == b""


def test_empty_content() -> None:
    empty_sha = hashlib.sha256(b"").hexdigest()
    with reader(b"", sha256=empty_sha, size=0) as r:
        assert r.read(5) == b""
    assert read_verified(io.BytesIO(b""), empty_sha, 0, "empty") == b""


def test_copyfileobj() -> None:
    out = io.BytesIO()
    with reader(DATA) as r:
        shutil.copyfileobj(r, out, 4096)
    assert out.getvalue() == DATA


def test_raw_without_readinto() -> None:
    raw = ReadOnlyRaw(DATA)
    with VerifiedReader(raw, sha256=SHA, size=len(DATA), what="x") as r:  # type: ignore[arg-type]
        assert readinto_in(r, 1000) == DATA
    assert raw.closed


def test_readinto_memoryview_and_typed_buffers() -> None:
    with reader(DATA) as r:
        buf = bytearray(len(DATA) + 100)
        view = memoryview(buf)
        got = 0
        while n := r.readinto(view[got:]):
            got += n
        assert bytes(buf[:got]) == DATA
    with reader(DATA[:4000], sha256=hashlib.sha256(DATA[:4000]).hexdigest(), size=4000) as r:
        words = array.array("I", bytes(4000))
        assert r.readinto(words) == 4000
        assert words.tobytes() == DATA[:4000]


def test_read_all_is_one_request_and_one_probe() -> None:
    raw = CountingRaw(DATA)
    assert read_verified(raw, SHA, len(DATA), "x") == DATA
    assert raw.reads == [len(DATA), 1]
    assert raw.closed


def test_never_reads_past_expected_size_except_probe() -> None:
    raw = CountingRaw(DATA)
    with VerifiedReader(raw, sha256=SHA, size=len(DATA), what="x") as r:
        read_in(r, 60_000)
    assert raw.reads == [60_000, len(DATA) - 60_000, 1]


def test_properties_and_close() -> None:
    raw = io.BytesIO(DATA)
    r = VerifiedReader(raw, sha256=SHA, size=len(DATA), what="x")
    assert r.readable()
    assert not r.seekable()
    assert not r.writable()
    with pytest.raises(OSError):
        r.seek(0)
    r.close()
    assert raw.closed
    assert r.closed
    with pytest.raises(ValueError):
        r.read(1)
    r.close()  # twice is fine


# -- damaged content -------------------------------------------------------------------------------------


DAMAGE: dict[str, bytes] = {
    "flipped-first": flipped(DATA, 0),
    "flipped-middle": flipped(DATA, len(DATA) // 2),
    "flipped-last": flipped(DATA, len(DATA) - 1),
    "truncated": DATA[:-1],
    "truncated-to-empty": b"",
    "extended": DATA + b"\0",
    "extended-a-lot": DATA + DATA,
}
EXPECTED_PROBLEM = {"flipped": "hash to", "truncated": "ends after", "extended": "longer than"}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("style", READ_STYLES)
def test_damage_raises_at_the_end(damage: str, style: str) -> None:
    with reader(DAMAGE[damage]) as r, pytest.raises(IntegrityError) as caught:
        READ_STYLES[style](r)
    message = str(caught.value)
    assert "stored content of object ns/p/key does not match its sha256 " + SHA in message
    assert EXPECTED_PROBLEM[damage.split("-", maxsplit=1)[0]] in message
    assert "objstore check" in message


@pytest.mark.parametrize("damage", ["flipped-middle", "truncated", "extended"])
def test_everything_before_the_end_is_delivered(damage: str) -> None:
    data = DAMAGE[damage]
    r = reader(data)
    got = bytearray()
    with pytest.raises(IntegrityError):
        while part := r.read(10_000):
            got += part
    # Verification happens only at the end: all but the final piece arrived first.
    assert len(got) >= min(len(data), len(DATA)) - 10_000
    assert bytes(got) == data[: len(got)]


def test_verdict_is_repeated_not_recomputed() -> None:
    raw = CountingRaw(flipped(DATA, 5))
    r = VerifiedReader(raw, sha256=SHA, size=len(DATA), what="x")
    with pytest.raises(IntegrityError) as first:
        r.read()
    reads = list(raw.reads)
    with pytest.raises(IntegrityError) as second:
        r.read(1)
    assert second.value is first.value
    assert raw.reads == reads


def test_read_verified_damaged_closes_raw() -> None:
    raw = CountingRaw(DATA[:-10])
    with pytest.raises(IntegrityError, match="ends after 99993 bytes, 100003 expected"):
        read_verified(raw, SHA, len(DATA), "x")
    assert raw.closed


# -- arguments -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sha256": "nothex"},
        {"sha256": SHA.upper()},
        {"size": -1},
        {"size": True},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"sha256": SHA, "size": len(DATA), "what": "x"} | kwargs
    with pytest.raises(InvalidValue):
        VerifiedReader(io.BytesIO(DATA), **args)
    raw = io.BytesIO(DATA)
    with pytest.raises(InvalidValue):
        read_verified(raw, args["sha256"], args["size"], "x")
    assert raw.closed
