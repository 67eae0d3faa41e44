"""Blob backend on another objstore's blob server (``objstore serve-blobs``), over HTTP or HTTPS.

``stage`` writes the caller's chunks to a private local temp file while hashing (nothing is sent, so nothing
is visible); ``publish`` PUTs that file, and the server publishes only if the bytes hash to the address;
``open`` streams a GET. Connections, retries and resumed downloads: ``objstore.blobs.http_transport``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import ssl
import stat as stat_mod
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from objstore.blobs.base import BlobBackend, BlobMissing, BlobStat, StagedBlob
from objstore.blobs.fsutil import (
    check_sha256,
    make_private_dirs,
    remove_file,
    remove_stale_files,
    storage_error,
)
from objstore.blobs.http_protocol import CHUNK, LIMIT_HEADER, LIST_MAX, MODIFIED_HEADER
from objstore.blobs.http_transport import Answer, Download, Transport
from objstore.errors import IntegrityError, InvalidValue, ObjStoreError, StorageError

__all__ = ["HttpBlobBackend"]

_CHECK_FIRST = 1 << 20  # uploads from this size ask HEAD first: skips sending content the server has
_TEMP_NAME = re.compile(r"[0-9]+-[0-9a-f]{16}\.tmp")


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
        self._has_token = token is not None
        self._setting = setting
        self._transport = Transport(
            self.name,
            parts.hostname,
            port,
            https=protocol == "https",
            ssl_context=ssl_context,
            token=token,
            timeout=timeout,
            max_retries=max_retries,
            delay=delay,
            jitter=jitter,
            setting=setting,
        )
        self._default_staging = staging_dir is None
        self._staging = os.path.abspath(
            staging_dir
            if staging_dir is not None
            else os.path.join(tempfile.gettempdir(), f"objstore-http-staging-{_user_id()}")
        )
        self._staging_ready = False

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
        except BaseException:
            _quietly(os.close, fd)
            _quietly(os.unlink, path)
            raise
        try:
            os.close(fd)  # no fsync: the bytes only matter until they are sent; the server makes them durable
        except OSError as exc:
            _quietly(os.unlink, path)
            raise self._local_error(exc, "close staging file", path) from exc
        return StagedBlob(sha256=hasher.hexdigest(), size=size, token=path)

    def discard(self, staged: StagedBlob) -> None:
        remove_file(self._temp_path(staged), self._local_error)

    def remove_stale_staging(self, older_than: datetime) -> int:
        return remove_stale_files(self._staging, older_than, self._local_error, name=_TEMP_NAME)

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
            answer = self._transport.call("PUT", _blob_path(sha256), body=source, size=size)
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
        try:
            return BlobStat(sha256, int(answer.headers["Content-Length"]), _modified_at(answer.headers))
        except (TypeError, ValueError) as exc:
            raise StorageError(
                f"{self.name} answered HEAD of {sha256} with malformed headers ({exc}); check that it runs "
                "the same objstore version"
            ) from None

    def _head(self, sha256: str) -> Answer:
        """The answer to HEAD: 200 (stored) or 404; anything else raises."""
        answer = self._transport.call("HEAD", _blob_path(sha256))
        if answer.status in (200, 404):
            return answer
        raise self._error(answer, "HEAD", sha256)

    def open(self, sha256: str) -> BinaryIO:
        path = _blob_path(check_sha256(sha256))
        response, conn = self._transport.stream(path)
        if response.status != 200:
            answer = self._transport.finish(response, conn)
            if answer.status == 404:
                raise BlobMissing(f"blob {sha256} is not stored in {self.name}")
            raise self._error(answer, "GET", sha256)
        download = Download(self._transport, sha256, path, response, conn)
        # Sized to the blob: a 1 MiB buffer per small read costs more than the request itself.
        return io.BufferedReader(download, max(1, min(download.size, CHUNK)))

    def delete(self, sha256: str) -> bool:
        # If a retry follows a DELETE whose answer was lost, it finds nothing and says False.
        answer = self._transport.call("DELETE", _blob_path(check_sha256(sha256)))
        if answer.status in (200, 404):
            return answer.status == 200
        raise self._error(answer, "DELETE", sha256)

    def iter_blobs(self) -> Iterator[BlobStat]:
        after: str | None = ""
        while after is not None:
            query = f"?limit={LIST_MAX}" + (f"&after={after}" if after else "")
            answer = self._transport.call("GET", "/blobs" + query)
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
        self._transport.close()

    # -- messages --------------------------------------------------------------------------------------

    def _error(self, answer: Answer, method: str, what: str) -> ObjStoreError:
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


def _server_message(answer: Answer) -> str:
    try:
        message = json.loads(answer.body)["error"]
        return str(message)[:500]
    except (ValueError, KeyError, TypeError):
        return f"{answer.status} (no details)"


def _modified_at(headers: Message) -> datetime:
    precise = headers.get(MODIFIED_HEADER)
    moment = datetime.fromisoformat(precise) if precise else parsedate_to_datetime(headers["Last-Modified"])
    if moment.utcoffset() is None:
        raise ValueError(f"modification time {moment} has no time zone")
    return moment.astimezone(UTC)


def _blob_path(sha256: str) -> str:
    return "/blobs/" + sha256  # checked: 64 hex characters


def _byte_view(chunk: object) -> memoryview:
    try:
        view = memoryview(chunk)  # type: ignore[arg-type]  # anything else is refused below
        return view if view.format == "B" and view.ndim == 1 else view.cast("B")
    except TypeError:
        raise InvalidValue(f"blob chunks must be bytes-like, got {type(chunk).__name__}") from None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if not written:  # a file that accepts nothing would loop forever: report it as a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _quietly(function: Any, argument: Any) -> None:
    with contextlib.suppress(OSError):
        function(argument)


def _user_id() -> int:
    getuid = getattr(os, "getuid", None)
    return int(getuid()) if getuid is not None else 0
