"""Blob backend on an S3-compatible bucket (AWS S3, Ceph RGW, ...) through obstore.

Layout: ``<prefix>/<sha[:2]>/<sha256>`` holds content, ``<prefix>/.staging/<32 hex>`` staged writes.

- ``stage`` hashes the caller's chunks as they stream into a staging key: one PUT when the value fits in
  one part, else a multipart upload with at most ``max_concurrency`` parts in flight (memory about
  ``part_size * (max_concurrency + 2)``). Nothing appears under the content address.
- ``publish`` HEADs the content address (already there: done) and otherwise copies the staging object
  onto it server-side (CopyObject: atomic, and nothing crosses the network). The staging object stays
  until ``discard``, so publishing again after a garbage collection works. CopyObject takes at most 5 GiB
  per request, so bigger blobs are published by streaming them through this process into a multipart
  upload of the content address, verified against their sha256 on the way (bounded memory; the bytes
  travel twice).
- A multipart upload whose process died (SIGKILL) stays in the bucket, invisible to listings;
  ``remove_stale_staging`` aborts those idle since before its cutoff (no part received since), as it
  deletes old staging objects.

Retries and error messages: see ``objstore.blobs.s3_retry``; streaming reads: ``objstore.blobs.s3_reader``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, NoReturn, cast

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from objstore.blobs.base import BlobBackend, BlobMissing, BlobStat, StagedBlob
from objstore.blobs.fsutil import check_sha256
from objstore.blobs.s3_reader import S3Reader
from objstore.blobs.s3_retry import Failure, Retrier, RetryPolicy, advice, scrub
from objstore.blobs.s3_uploads import Credentials, MultipartUploads
from objstore.blobs.verify import VerifiedReader
from objstore.errors import InvalidValue, ObjStoreError, StorageError

if TYPE_CHECKING:
    from obstore import ObjectMeta, WritableFile
    from obstore.store import ClientConfig, RetryConfig, S3Config

__all__ = ["S3BlobBackend"]

MiB = 1 << 20
GiB = 1 << 30
STAGING = ".staging"
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_COPY_BYTES = 5 * GiB  # S3's limit for one CopyObject request
READ_CHUNK = MiB  # the reader's unit: bounds its memory, amortises the Python/Rust crossing
# Chunks a background thread may receive ahead of the consumer (see s3_reader), for objects of more than
# READ_AHEAD_FROM bytes: below that a thread costs more than the overlap of download and hash gains.
READ_AHEAD = 4
READ_AHEAD_FROM = 2 * READ_CHUNK
_LIST_PAGE = 1000
# Transfers (GET streams, copies) are bounded by inactivity (read_timeout), not by total duration: a
# 5 GiB read by a slow consumer may rightly take hours. This only stops a transfer that runs for a day.
_TRANSFER_LIMIT = timedelta(hours=24)
_NO_RETRIES: RetryConfig = {"max_retries": 0}

_log = logging.getLogger("objstore.blobs.s3")


def _chunk_bytes(chunk: object) -> bytes:
    """The chunk as immutable bytes (a caller may reuse its bytearray after handing it over)."""
    if type(chunk) is bytes:
        return chunk
    try:
        view = memoryview(chunk)  # type: ignore[arg-type]  # anything else is refused below
    except TypeError:
        raise InvalidValue(f"blob chunks must be bytes-like, got {type(chunk).__name__}") from None
    return view.tobytes()


class S3BlobBackend(BlobBackend):
    """Content-addressed blobs in an S3 bucket.

    ``region`` defaults to ``AWS_REGION``, ``AWS_DEFAULT_REGION``, then us-east-1. ``endpoint`` names an
    S3-compatible server (path-style requests; plain HTTP only when the URL says ``http://``). Credentials
    not given come from obstore's usual sources (``AWS_*`` variables, instance metadata, web identity).
    Retry ``k`` waits ``2^(k-1) * delay * (1 ± jitter/2)``, ``max_retries`` times at most. ``timeout`` bounds
    connecting and each request (each part of an upload too); reads and copies may take longer but fail
    after ``timeout`` seconds without progress; a timed-out request is not retried. An upload holds about
    ``part_size * (max_concurrency + 2)`` bytes, and S3 takes at most 10,000 parts: blobs up to 78 GiB with
    the default ``part_size``, raise it for larger ones. A reader of a blob over 2 MiB has a thread of its
    own that receives up to 4 chunks of 1 to 2 MiB ahead of the consumer (``s3_reader``), so hashing and
    downloading overlap; with the chunk being received and the one being read, 6 chunks at most.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        region: str | None = None,
        endpoint: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        max_retries: int = 6,
        delay: float = 0.3,
        jitter: float = 0.5,
        timeout: float = 30.0,
        part_size: int = 8 * MiB,
        max_concurrency: int = 4,
    ) -> None:
        if not isinstance(bucket, str) or not bucket or "/" in bucket or bucket != bucket.strip():
            raise InvalidValue(f"bucket must be a bucket name, got {bucket!r}")
        segments = [s for s in str(prefix).split("/") if s]
        if any(s in (".", "..", STAGING) for s in segments):
            raise InvalidValue(f"prefix {prefix!r} may not contain '.', '..' or {STAGING!r} segments")
        if endpoint is not None and not re.match(r"https?://[^/\s]+", endpoint):
            raise InvalidValue(f"endpoint must be an http:// or https:// URL, got {endpoint!r}")
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidValue(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(part_size, int) or not MIN_PART_SIZE <= part_size <= MAX_COPY_BYTES:
            raise InvalidValue(f"part_size must be between 5 MiB and 5 GiB (S3's limits), got {part_size!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise InvalidValue(f"max_concurrency must be a positive int, got {max_concurrency!r}")
        policy = RetryPolicy(max_retries, delay, jitter)
        self.bucket = bucket
        self.prefix = "/".join(segments)
        self.endpoint = endpoint.rstrip("/") if endpoint else None
        self.region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        )
        self.timeout = float(timeout)
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        #: Blobs larger than this are published by streaming instead of CopyObject (S3's 5 GiB limit).
        self.max_copy_bytes = MAX_COPY_BYTES
        self.name = f"s3://{bucket}/{self.prefix}" + (f" ({self.endpoint})" if self.endpoint else "")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self._staging = f"{self._root}{STAGING}/"
        self._token = re.compile(re.escape(self._staging) + r"[0-9a-f]{32}")
        self._content = re.compile(re.escape(self._root) + r"([0-9a-f]{2})/([0-9a-f]{64})")
        self._where = self.endpoint or f"the AWS S3 endpoint of {self.region}"

        config: S3Config = {"region": self.region}
        if self.endpoint:
            config["endpoint"] = self.endpoint
            config["virtual_hosted_style_request"] = False  # path style: what S3-compatible servers take
        if access_key_id is not None:
            config["access_key_id"] = access_key_id
        if secret_access_key is not None:
            config["secret_access_key"] = secret_access_key
        if session_token is not None:
            config["session_token"] = session_token
        # The same values obstore falls back to, for the two requests it cannot make (s3_uploads).
        env = os.environ
        key_id = access_key_id if access_key_id is not None else env.get("AWS_ACCESS_KEY_ID")
        secret = secret_access_key if secret_access_key is not None else env.get("AWS_SECRET_ACCESS_KEY")
        token = session_token if session_token is not None else env.get("AWS_SESSION_TOKEN")
        self._credentials = Credentials(key_id, secret, token) if key_id and secret else None
        self._secrets = tuple(s for s in (key_id, secret, token) if s)

        allow_http = bool(self.endpoint and self.endpoint.startswith("http://"))
        limit = timedelta(seconds=self.timeout)
        short: ClientConfig = {"allow_http": allow_http, "connect_timeout": limit, "timeout": limit}
        long: ClientConfig = {**short, "read_timeout": limit, "timeout": _TRANSFER_LIMIT}
        # One client per kind of work. Ours replay whole requests, so obstore's retries are off for
        # requests (HEAD, small PUT, DELETE, LIST) and transfers (GET streams, CopyObject); multipart
        # parts are sent from inside obstore, which retries them (see RetryPolicy.obstore_config).
        self._requests = S3Store(bucket, config=config, client_options=short, retry_config=_NO_RETRIES)
        self._transfers = S3Store(bucket, config=config, client_options=long, retry_config=_NO_RETRIES)
        self._uploads = S3Store(
            bucket, config=config, client_options=short, retry_config=policy.obstore_config(self.timeout)
        )
        self._retrier = Retrier(policy, self._describe)
        self._multipart = MultipartUploads(
            bucket=bucket,
            endpoint=self.endpoint,
            region=self.region,
            credentials=lambda: self._credentials,
            timeout=self.timeout,
        )
        self._warned_unsigned = False

    # -- keys and errors -------------------------------------------------------------------------------

    def _content_key(self, sha256: str) -> str:
        sha256 = check_sha256(sha256)
        return f"{self._root}{sha256[:2]}/{sha256}"

    def _staging_key(self, staged: StagedBlob) -> str:
        token = staged.token
        if type(token) is not str or self._token.fullmatch(token) is None:
            raise InvalidValue(f"staged blob token {token!r} was not issued by {self.name}")
        return token

    def _describe(self, action: str, failure: Failure, attempts: int) -> StorageError:
        text, code = advice(
            failure, attempts=attempts, timeout=self.timeout, where=self._where, bucket=self.bucket
        )
        err = StorageError(scrub(f"cannot {action} in {self.name}: {failure.detail}; {text}", self._secrets))
        err.errno = code
        return err

    def _head(self, key: str, action: str) -> ObjectMeta | None:
        try:
            return self._retrier.call(action, lambda: obstore.head(self._requests, key), missing_ok=True)
        except FileNotFoundError:
            return None

    # -- writing ---------------------------------------------------------------------------------------

    def stage(self, chunks: Iterable[bytes]) -> StagedBlob:
        key = f"{self._staging}{secrets.token_hex(16)}"
        hasher = hashlib.sha256()
        first: list[bytes] = []
        size = 0
        it = iter(chunks)
        # Collect up to one part: a value that fits is a single PUT (cheaper than a multipart upload).
        for chunk in it:
            data = _chunk_bytes(chunk)
            if data:
                hasher.update(data)
                first.append(data)
                size += len(data)
                if size > self.part_size:
                    break
        else:
            body = b"".join(first)
            first.clear()
            self._retrier.call(
                f"upload staging object {key}",
                lambda: obstore.put(self._requests, key, body, use_multipart=False),  # noqa: B023 - called now
            )
            return StagedBlob(hasher.hexdigest(), size, key)

        caller_error: BaseException | None = None
        writer = self._open_writer(key)
        try:
            # Python drives the loop and obstore only sees write(): the caller's iterator may itself use
            # obstore (a reader from another S3 store), which must not run inside obstore's runtime.
            with writer:
                for data in first:
                    writer.write(data)
                first.clear()
                while True:
                    try:
                        chunk = next(it)
                    except StopIteration:
                        break
                    except BaseException as exc:
                        caller_error = exc
                        raise
                    data = _chunk_bytes(chunk)
                    if data:
                        hasher.update(data)
                        size += len(data)
                        writer.write(data)
            # Leaving the block completes the upload; an exception aborts it (both checked by the tests).
        except BaseException as exc:
            self._upload_failed(exc, caller_error, f"upload staging object {key}")
        return StagedBlob(hasher.hexdigest(), size, key)

    def _open_writer(self, key: str) -> WritableFile:
        """A multipart upload to ``key``: ``part_size`` parts, at most ``max_concurrency`` in flight."""
        return obstore.open_writer(
            self._uploads, key, buffer_size=self.part_size, max_concurrency=self.max_concurrency
        )

    def _upload_failed(self, exc: BaseException, caller_error: BaseException | None, action: str) -> NoReturn:
        """Re-raise what ended an upload: the caller's own error unchanged, obstore's as StorageError."""
        if caller_error is not None:
            if exc is caller_error:
                raise exc
            raise caller_error from None  # the abort failed too; the caller's error is the one to see
        if isinstance(exc, ObjStoreError) or not isinstance(exc, BaseError | OSError):
            raise exc
        raise self._retrier.failure_error(action, exc) from None  # obstore says how often it retried

    def publish(self, staged: StagedBlob) -> None:
        final = self._content_key(staged.sha256)
        source = self._staging_key(staged)
        if self._head(final, f"look up blob {staged.sha256}") is not None:
            return
        try:
            if staged.size > self.max_copy_bytes:
                self._publish_by_streaming(staged, source, final)
            else:
                self._retrier.call(
                    f"publish blob {staged.sha256}",
                    lambda: obstore.copy(self._transfers, source, final),
                    missing_ok=True,
                )
        except FileNotFoundError:
            raise StorageError(
                f"cannot publish blob {staged.sha256} in {self.name}: its staging object {source} is gone "
                "(discarded, or removed as stale); stage the content again"
            ) from None

    def _publish_by_streaming(self, staged: StagedBlob, source: str, final: str) -> None:
        """Past CopyObject's limit: read the staging object back and upload it as the content, verified."""
        raw = self._open_key(source, f"staging object {source}")
        what = f"staging object {source} of blob {staged.sha256}"
        try:
            with (
                VerifiedReader(
                    cast(BinaryIO, raw), sha256=staged.sha256, size=staged.size, what=what
                ) as reader,
                self._open_writer(final) as writer,
            ):
                # A mismatch raises IntegrityError inside the block, which aborts the upload.
                while data := reader.read(self.part_size):
                    writer.write(data)
        except BaseException as exc:
            self._upload_failed(exc, None, f"publish blob {staged.sha256}")

    def discard(self, staged: StagedBlob) -> None:
        key = self._staging_key(staged)
        # S3 answers a DELETE of a missing key with success, which is what discard wants.
        self._retrier.call(f"remove staging object {key}", lambda: obstore.delete(self._requests, key))

    # -- reading ---------------------------------------------------------------------------------------

    def exists(self, sha256: str) -> bool:
        return self._head(self._content_key(sha256), f"look up blob {sha256}") is not None

    def stat(self, sha256: str) -> BlobStat | None:
        meta = self._head(self._content_key(sha256), f"stat blob {sha256}")
        if meta is None:
            return None
        return BlobStat(sha256, meta["size"], meta["last_modified"].astimezone(UTC))

    def open(self, sha256: str) -> BinaryIO:
        key = self._content_key(sha256)
        try:
            reader = self._open_key(key, f"blob {sha256}")
        except FileNotFoundError:
            raise BlobMissing(f"blob {sha256} is not stored in {self.name}") from None
        return cast(BinaryIO, reader)  # a RawIOBase: read/readinto/close, like an unbuffered file

    def _open_key(self, key: str, what: str) -> S3Reader:
        """A streaming reader of ``key``; FileNotFoundError if it is not there."""
        result = self._retrier.call(
            f"read {what}", lambda: obstore.get(self._transfers, key), missing_ok=True
        )
        meta = result.meta
        etag = meta["e_tag"]

        def fetch(offset: int) -> Iterator[bytes]:
            # The rest of the same version: If-Match keeps a replaced object from being spliced in.
            options = {"range": {"offset": offset}, **({"if_match": etag} if etag else {})}
            rest = self._retrier.call(
                f"read {what}",
                lambda: obstore.get(self._transfers, key, options=options),  # type: ignore[arg-type]
            )
            return iter(rest.stream(min_chunk_size=READ_CHUNK))

        stream = iter(result.stream(min_chunk_size=READ_CHUNK))
        size = meta["size"]
        ahead = READ_AHEAD if size > READ_AHEAD_FROM else 0
        return S3Reader(stream, size=size, fetch=fetch, retrier=self._retrier, what=what, read_ahead=ahead)

    # -- housekeeping ----------------------------------------------------------------------------------

    def delete(self, sha256: str) -> bool:
        key = self._content_key(sha256)
        # S3's DELETE succeeds whether or not the key existed: ask first to report which it was.
        if self._head(key, f"look up blob {sha256}") is None:
            return False
        self._retrier.call(f"delete blob {sha256}", lambda: obstore.delete(self._requests, key))
        return True

    def _list(self, prefix: str, action: str) -> Iterator[ObjectMeta]:
        """Every object under ``prefix`` (a whole path segment)."""
        return self._retrier.listing(
            action,
            lambda after: obstore.list(self._requests, prefix or None, offset=after, chunk_size=_LIST_PAGE),
        )

    def iter_blobs(self) -> Iterator[BlobStat]:
        for meta in self._list(self._root.rstrip("/"), "list blobs"):
            found = self._content.fullmatch(meta["path"])
            # Only <2 hex>/<sha256> with a matching shard: staging and foreign keys are not ours to list.
            if found is not None and found[2].startswith(found[1]):
                yield BlobStat(found[2], meta["size"], meta["last_modified"].astimezone(UTC))

    def remove_stale_staging(self, older_than: datetime) -> int:
        if older_than.tzinfo is None or older_than.utcoffset() is None:
            raise InvalidValue("remove_stale_staging needs an aware datetime (UTC)")
        stale = [
            meta["path"]
            for meta in self._list(self._staging.rstrip("/"), "list staging objects")
            if self._token.fullmatch(meta["path"]) and meta["last_modified"] < older_than
        ]
        for start in range(0, len(stale), _LIST_PAGE):
            batch = stale[start : start + _LIST_PAGE]
            # One DeleteObjects request per 1000 keys.
            self._retrier.call(
                "remove stale staging objects",
                partial(obstore.delete, self._requests, batch),
            )
        return len(stale) + self._abort_stale_uploads(older_than)

    def _abort_stale_uploads(self, older_than: datetime) -> int:
        """Abort multipart uploads to staging keys idle since before ``older_than`` (killed writers)."""
        if not self._multipart.can_sign():
            if not self._warned_unsigned:
                self._warned_unsigned = True
                _log.warning(
                    "%s: no static credentials, so incomplete multipart uploads of killed writers are not "
                    "aborted; add an AbortIncompleteMultipartUpload lifecycle rule to the bucket",
                    self.name,
                )
            return 0

        return self._multipart.abort_stale(
            self._staging,
            older_than,
            ours=lambda key: self._token.fullmatch(key) is not None,
            call=self._retrier.call,
        )

    def close(self) -> None:
        """obstore's clients close their connections when dropped; nothing to do."""
