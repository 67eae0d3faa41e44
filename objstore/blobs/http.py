"""Blob backend on another objstore's blob server (``objstore serve-blobs``), over HTTP or HTTPS.

``stage`` writes the caller's chunks to a private local temp file while hashing (nothing is sent, so nothing
is visible); ``publish`` PUTs that file (``sendfile``), and the server publishes only if the bytes hash to
the address; ``open`` streams a GET, resuming with a Range request if the connection breaks mid-body.

Requests are retried on connection errors and 502/503/504 with exponential backoff and jitter: they are
all idempotent (content-addressed PUT, DELETE of an address). Each thread keeps a few keep-alive
connections (http.client connections are not thread-safe). The token is sent in a header only: it never
appears in the name, reprs, messages or logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import secrets
import ssl
import stat as stat_mod
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from objstore.blobs.base import BlobBackend, BlobMissing, BlobStat, StagedBlob
from objstore.blobs.fsutil import check_sha256, make_private_dirs, storage_error
from objstore.blobs.http_server import CHUNK, LIMIT_HEADER, LIST_MAX, MARKER_HEADER
from objstore.errors import IntegrityError, InvalidValue, ObjStoreError, StorageError

__all__ = ["HttpBlobBackend"]

_RETRY_STATUS = frozenset({502, 503, 504})
_KEEP_IDLE = 4  # idle connections kept per thread
_CHECK_FIRST = 1 << 20  # uploads from this size ask HEAD first: skips sending content the server has
_MAX_RETRY_AFTER = 30.0
_TEMP_NAME = re.compile(r"[0-9]+-[0-9a-f]{16}\.tmp")


class _Hidden:
    """A secret whose repr does not show it (debuggers and crash reports print ``vars``)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: Message
    body: bytes


class _Idle:
    """One thread's idle connections (an object, so that the pool can hold it weakly)."""

    __slots__ = ("__weakref__", "conns")

    def __init__(self) -> None:
        self.conns: list[HTTPConnection] = []


class _Pool:
    """A few keep-alive connections per thread; ``close_all`` closes every thread's idle ones."""

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self._local = threading.local()
        self._all: weakref.WeakSet[_Idle] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _idle(self) -> _Idle:
        idle: _Idle | None = getattr(self._local, "idle", None)
        if idle is None:
            idle = self._local.idle = _Idle()
            with self._lock:
                self._all.add(idle)
        return idle

    def acquire(self) -> tuple[HTTPConnection, bool]:
        """A connection, and whether it was used before (so the server may have closed it meanwhile)."""
        idle = self._idle().conns
        if idle:
            return idle.pop(), True
        return self._connect(), False

    def release(self, conn: HTTPConnection) -> None:
        idle = self._idle().conns
        if len(idle) < _KEEP_IDLE:
            idle.append(conn)
        else:
            conn.close()

    def clear(self) -> None:
        idle = self._idle().conns
        while idle:
            idle.pop().close()

    def close_all(self) -> None:
        with self._lock:
            pools = list(self._all)
        for idle in pools:
            while idle.conns:
                idle.conns.pop().close()


class HttpBlobBackend(BlobBackend):
    """Blobs on a blob server at ``host`` (``name:port``); see the module docstring.

    ``token``: the server's bearer token. ``timeout``: seconds per socket operation. ``max_retries``
    retries after the first attempt, the Nth waiting ``2**N * delay * (1 ± jitter/2)`` seconds (at least
    the server's Retry-After, up to 30 s). ``staging_dir``: where ``stage`` writes (default: a 0700 folder
    of this user under the system temp folder). ``setting`` names this store in messages.
    """

    def __init__(
        self,
        host: str,
        *,
        protocol: str = "http",
        token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        delay: float = 0.2,
        jitter: float = 0.5,
        staging_dir: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        setting: str = "blobs.stores[0]",
    ) -> None:
        if protocol not in ("http", "https"):
            raise InvalidValue(f'protocol must be "http" or "https", got {protocol!r}')
        parts = urlsplit(f"//{host}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or parts.path or parts.query or parts.fragment or "@" in host:
            raise InvalidValue(f"blob server host must look like name:port, got {host!r}")
        if not timeout > 0 or max_retries < 0 or delay < 0 or not 0 <= jitter <= 2:
            raise InvalidValue("need timeout > 0, max_retries >= 0, delay >= 0 and 0 <= jitter <= 2")
        self.name = f"{protocol}://{host}"
        self.timeout, self.max_retries, self.delay, self.jitter = timeout, max_retries, delay, jitter
        self._https = protocol == "https"
        self._hostname, self._port = parts.hostname, port
        self._ssl_context = ssl_context
        self._has_token = token is not None
        self._authorization = None if token is None else _Hidden(f"Bearer {token}")
        self._setting = setting
        self._default_staging = staging_dir is None
        self._staging = os.path.abspath(
            staging_dir
            if staging_dir is not None
            else os.path.join(tempfile.gettempdir(), f"objstore-http-staging-{_user_id()}")
        )
        self._staging_ready = False
        self._pool = _Pool(self._connect)

    def _connect(self) -> HTTPConnection:
        if self._https:
            return HTTPSConnection(
                self._hostname, self._port, timeout=self.timeout, context=self._ssl_context, blocksize=CHUNK
            )
        return HTTPConnection(self._hostname, self._port, timeout=self.timeout, blocksize=CHUNK)

    # -- local staging ---------------------------------------------------------------------------------

    def _staging_folder(self) -> str:
        if not self._staging_ready:
            try:
                make_private_dirs(Path(self._staging))
                st = os.lstat(self._staging)
            except OSError as exc:
                raise self._local_error(exc, "create staging folder", self._staging) from exc
            # A shared temp folder: someone else may have created the folder first, to read our content.
            if not stat_mod.S_ISDIR(st.st_mode) or (
                self._default_staging and (st.st_uid != _user_id() or st.st_mode & 0o077)
            ):
                raise StorageError(
                    f"the staging folder {self._staging} of {self.name} is not a private folder of this "
                    "user; remove it, or point TMPDIR (or the store's staging_dir) elsewhere"
                )
            self._staging_ready = True
        return self._staging

    def _temp_path(self, staged: StagedBlob) -> str:
        token = staged.token
        if type(token) is not str or os.path.dirname(token) != self._staging:
            raise InvalidValue(f"staged blob token {token!r} was not issued by {self.name}")
        if _TEMP_NAME.fullmatch(os.path.basename(token)) is None:
            raise InvalidValue(f"staged blob token {token!r} was not issued by {self.name}")
        return token

    def _local_error(self, exc: OSError, action: str, path: str) -> StorageError:
        return storage_error(
            exc,
            action,
            path,
            store=self.name,
            folder="local staging folder",
            setting="staging folder (TMPDIR, or the store's staging_dir)",
        )

    def stage(self, chunks: Iterable[bytes]) -> StagedBlob:
        path = os.path.join(self._staging_folder(), f"{os.getpid()}-{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as exc:
            raise self._local_error(exc, "create staging file", path) from exc
        hasher = hashlib.sha256()
        size = 0
        try:
            for chunk in chunks:
                data = chunk if type(chunk) is bytes else _byte_view(chunk)
                if not len(data):
                    continue
                hasher.update(data)
                try:
                    _write_all(fd, data)
                except OSError as exc:
                    raise self._local_error(exc, "write staging file", path) from exc
                size += len(data)
            # No fsync: the bytes only matter until they are sent, and the server makes them durable.
            os.close(fd)
        except BaseException:
            _quietly(os.close, fd)
            _quietly(os.unlink, path)
            raise
        return StagedBlob(sha256=hasher.hexdigest(), size=size, token=path)

    def discard(self, staged: StagedBlob) -> None:
        path = self._temp_path(staged)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._local_error(exc, "remove staging file", path) from exc

    def remove_stale_staging(self, older_than: datetime) -> int:
        if older_than.tzinfo is None or older_than.utcoffset() is None:
            raise InvalidValue("remove_stale_staging needs an aware datetime (UTC)")
        cutoff = older_than.timestamp()
        try:
            with os.scandir(self._staging) as it:
                entries = [entry for entry in it if _TEMP_NAME.fullmatch(entry.name)]
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise self._local_error(exc, "list staging folder", self._staging) from exc
        removed = 0
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat_mod.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:
                continue  # discarded meanwhile
            except OSError as exc:
                raise self._local_error(exc, "remove staging file", entry.path) from exc
            removed += 1
        return removed

    # -- the server ------------------------------------------------------------------------------------

    def publish(self, staged: StagedBlob) -> None:
        sha256 = check_sha256(staged.sha256)
        path = self._temp_path(staged)
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise StorageError(
                f"cannot publish blob {sha256} to {self.name}: its staging file {path} is gone (discarded, "
                "or removed as stale); stage the content again"
            ) from None
        except OSError as exc:
            raise self._local_error(exc, "open staging file", path) from exc
        with source:
            size = os.fstat(source.fileno()).st_size
            if size != staged.size:
                raise IntegrityError(
                    f"the staging file {path} of blob {sha256} changed size since it was staged "
                    f"({size} bytes, {staged.size} staged); stage the content again"
                )
            if size >= _CHECK_FIRST:
                known = self._head(sha256)
                if known.status == 200:
                    return  # already there: save the upload
                limit = known.headers.get(LIMIT_HEADER, "")
                if limit.isdigit() and size > int(limit):
                    raise StorageError(
                        f"blob {sha256} has {size} bytes, more than the {limit} that {self.name} accepts "
                        "(its max blob size): raise the server's limit or use another blob store"
                    )
            answer = self._call("PUT", _blob_path(sha256), body=source, size=size)
        if answer.status in (200, 201):
            return
        if answer.status == 400 and b"hashes to" in answer.body:
            raise IntegrityError(
                f"{self.name} refused blob {sha256}: {_server_message(answer)} (the staging file {path} was "
                "changed after staging); stage the content again"
            )
        raise self._error(answer, "PUT", sha256)

    def exists(self, sha256: str) -> bool:
        return self._head(check_sha256(sha256)).status == 200

    def stat(self, sha256: str) -> BlobStat | None:
        answer = self._head(check_sha256(sha256))
        if answer.status == 404:
            return None
        headers = answer.headers
        return BlobStat(sha256, int(headers.get("Content-Length", "0")), _modified_at(headers))

    def _head(self, sha256: str) -> _Answer:
        """The answer to HEAD: 200 (stored) or 404; anything else raises."""
        answer = self._call("HEAD", _blob_path(sha256))
        if answer.status in (200, 404):
            return answer
        raise self._error(answer, "HEAD", sha256)

    def open(self, sha256: str) -> BinaryIO:
        path = _blob_path(check_sha256(sha256))
        response, conn, _ = self._request("GET", path, stream=True)
        if response.status != 200:
            answer = _Answer(response.status, response.msg, _read_and_close(response, conn))
            if response.status == 404:
                raise BlobMissing(f"blob {sha256} is not stored in {self.name}")
            raise self._error(answer, "GET", sha256)
        return io.BufferedReader(_Download(self, sha256, path, response, conn), CHUNK)

    def delete(self, sha256: str) -> bool:
        # If a retry follows a DELETE whose answer was lost, it finds nothing and says False.
        answer = self._call("DELETE", _blob_path(check_sha256(sha256)))
        if answer.status in (200, 404):
            return answer.status == 200
        raise self._error(answer, "DELETE", sha256)

    def iter_blobs(self) -> Iterator[BlobStat]:
        after: str | None = ""
        while after is not None:
            query = f"?limit={LIST_MAX}" + (f"&after={after}" if after else "")
            answer = self._call("GET", "/blobs" + query)
            if answer.status != 200:
                raise self._error(answer, "GET", "listing")
            try:
                page = json.loads(answer.body)
                blobs = [
                    BlobStat(b["sha256"], int(b["size"]), datetime.fromisoformat(b["modified_at"]))
                    for b in page["blobs"]
                ]
                after = page["next"]
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(
                    f"{self.name} sent a malformed blob listing ({exc}); check that the server runs "
                    "the same objstore version"
                ) from None
            yield from blobs

    def close(self) -> None:
        self._pool.close_all()

    # -- requests --------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, body: BinaryIO | None = None, size: int = 0) -> _Answer:
        """A request whose whole (small) answer is read within the retries."""
        response, conn, data = self._request(method, path, body=body, size=size)
        _release(response, conn, self._pool)
        return _Answer(response.status, response.msg, data)

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: BinaryIO | None = None,
        size: int = 0,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> tuple[HTTPResponse, HTTPConnection, bytes]:
        """Send, retrying connection errors and 502/503/504. The answer's body is read within the
        retries and returned, unless ``stream``: then it is left to read (and b"" returned)."""
        attempt = 0
        while True:
            conn, reused = self._pool.acquire()
            retry_after: str | None = None
            data = b""
            try:
                response = self._send(conn, method, path, body=body, size=size, headers=headers or {})
                if not stream and response.status not in _RETRY_STATUS:
                    data = response.read()
            except (OSError, HTTPException) as exc:
                conn.close()
                if reused and not isinstance(exc, TimeoutError):
                    self._pool.clear()  # the server closed idle connections: retry at once on a new one
                    continue
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.getheader(MARKER_HEADER) is None and response.status not in _RETRY_STATUS:
                    _read_and_close(response, conn)
                    raise StorageError(
                        f"{self.name} answered {method} {path} with {response.status} {response.reason} "
                        f"but is not an objstore blob server; check {self._setting}.host"
                    )
                if response.status not in _RETRY_STATUS:
                    return response, conn, data
                retry_after = response.getheader("Retry-After")
                _read_and_close(response, conn, pool=self._pool)
                failure = f"{response.status} {response.reason}"
            if attempt >= self.max_retries:
                raise StorageError(
                    f"cannot reach the blob server {self.name} for {method} {path} after {attempt + 1} "
                    f"attempts (last: {failure}); check that it runs and that {self._setting}.host is right"
                )
            time.sleep(self._backoff(attempt, retry_after))
            attempt += 1

    def _send(
        self,
        conn: HTTPConnection,
        method: str,
        path: str,
        *,
        body: BinaryIO | None,
        size: int,
        headers: Mapping[str, str],
    ) -> HTTPResponse:
        conn.putrequest(method, path, skip_accept_encoding=True)
        if self._authorization is not None:
            conn.putheader("Authorization", self._authorization.value)
        for name, value in headers.items():
            conn.putheader(name, value)
        if method == "PUT":
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(size))
        conn.endheaders()
        if body is not None and size:
            try:
                if conn.sock is not None and not self._https:
                    conn.sock.sendfile(body, 0, size)
                else:
                    body.seek(0)
                    while data := body.read(CHUNK):
                        conn.send(data)
            except OSError:
                # The server may have answered early (401, 413) and closed: its answer says more.
                try:
                    return conn.getresponse()
                except (OSError, HTTPException):
                    pass
                raise
        return conn.getresponse()

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        wait = (2.0**attempt) * self.delay * (1 + self.jitter * (random.random() - 0.5))
        if retry_after is not None and retry_after.strip().isdigit():
            wait = max(wait, min(float(retry_after), _MAX_RETRY_AFTER))
        return wait

    def _error(self, answer: _Answer, method: str, what: str) -> ObjStoreError:
        message = _server_message(answer)
        if answer.status == 401:
            state = "wrong" if self._has_token else "missing"
            return StorageError(
                f"{self.name} refused {method} of {what}: the bearer token is {state}; set "
                f"{self._setting}.token to the token the blob server was started with"
            )
        if answer.status == 507:
            return StorageError(f"{self.name} is out of space ({message}): free space on the blob server")
        return StorageError(
            f"{self.name} answered {method} of {what} with {answer.status}: {message}; check the blob "
            "server's log"
        )


class _Download(io.RawIOBase):
    """The body of a GET; if the connection breaks, continues with ``Range: bytes=<pos>-`` requests."""

    def __init__(
        self, backend: HttpBlobBackend, sha256: str, path: str, response: HTTPResponse, conn: HTTPConnection
    ) -> None:
        super().__init__()
        self._backend, self._sha256, self._path = backend, sha256, path
        self._response: HTTPResponse | None = response
        self._conn: HTTPConnection | None = conn
        self._size = int(response.getheader("Content-Length") or 0)
        self._pos = 0
        self._attempt = 0
        if not self._size:
            self._finish()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self._size - self._pos]
        while self._response is not None and len(view):
            error: BaseException | None = None
            try:
                n = self._response.readinto(view)
            except (OSError, HTTPException) as exc:
                n, error = 0, exc
            if n:
                self._pos += n
                if self._pos == self._size:
                    self._finish()
                return n
            self._resume(error)
        return 0

    def readall(self) -> bytes:
        data = bytearray(self._size - self._pos)
        view, done = memoryview(data), 0
        while done < len(data) and (n := self.readinto(view[done:])):
            done += n
        return bytes(data[:done])

    def _resume(self, error: BaseException | None) -> None:
        backend = self._backend
        self._drop_connection()
        if self._attempt >= backend.max_retries:
            raise StorageError(
                f"the download of blob {self._sha256} from {backend.name} broke after {self._pos} of "
                f"{self._size} bytes ({error or 'connection closed'}); retry later"
            )
        time.sleep(backend._backoff(self._attempt, None))
        self._attempt += 1
        wanted = f"bytes {self._pos}-{self._size - 1}/{self._size}"
        response, conn, _ = backend._request(
            "GET", self._path, headers={"Range": f"bytes={self._pos}-"}, stream=True
        )
        if response.status == 404:
            _read_and_close(response, conn)
            raise BlobMissing(f"blob {self._sha256} was deleted from {backend.name} while being read")
        if response.status != 206 or response.getheader("Content-Range") != wanted:
            _read_and_close(response, conn)
            raise StorageError(
                f"{backend.name} could not resume the download of blob {self._sha256} at byte {self._pos} "
                f"(answered {response.status}); retry later"
            )
        self._response, self._conn = response, conn

    def _finish(self) -> None:
        if self._response is not None and self._conn is not None:
            _read_and_close(self._response, self._conn, pool=self._backend._pool)
        self._response = self._conn = None

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._response = self._conn = None

    def close(self) -> None:
        if not self.closed:
            self._drop_connection()  # mid-body: the connection cannot serve another request
            super().close()


def _read_and_close(response: HTTPResponse, conn: HTTPConnection, *, pool: _Pool | None = None) -> bytes:
    """The rest of a response's body; the connection goes back to ``pool`` if it can serve again."""
    try:
        data = response.read()
    except (OSError, HTTPException):
        conn.close()
        return b""
    _release(response, conn, pool)
    return data


def _release(response: HTTPResponse, conn: HTTPConnection, pool: _Pool | None) -> None:
    if pool is not None and response.isclosed() and not response.will_close:
        pool.release(conn)
    else:
        conn.close()


def _server_message(answer: _Answer) -> str:
    try:
        message = json.loads(answer.body)["error"]
        return str(message)[:500]
    except (ValueError, KeyError, TypeError):
        return f"{answer.status} (no details)"


def _modified_at(headers: Message) -> datetime:
    precise = headers.get("X-Modified-At")
    if precise:
        return datetime.fromisoformat(precise)
    loose = headers.get("Last-Modified")
    return parsedate_to_datetime(loose) if loose else datetime.now(UTC)


def _blob_path(sha256: str) -> str:
    return "/blobs/" + quote(sha256)


def _byte_view(chunk: object) -> memoryview:
    try:
        view = memoryview(chunk)  # type: ignore[arg-type]  # anything else is refused below
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except TypeError:
        raise InvalidValue(f"blob chunks must be bytes-like, got {type(chunk).__name__}") from None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _quietly(function: Any, argument: Any) -> None:
    with contextlib.suppress(OSError):
        function(argument)


def _user_id() -> int:
    getuid = getattr(os, "getuid", None)
    return int(getuid()) if getuid is not None else 0
