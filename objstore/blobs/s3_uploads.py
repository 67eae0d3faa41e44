"""Listing and aborting incomplete multipart uploads, with small SigV4-signed requests.

Why not obstore: it has no ListMultipartUploads or AbortMultipartUpload (its multipart uploads abort
themselves on errors, but an upload whose process was SIGKILLed stays behind, invisible to listings and
billed). Why not boto3: it would become a runtime dependency of the ``s3`` extra for two requests. So this
module signs them itself (AWS Signature Version 4, header-based, unsigned-free: the body is empty) with the
static credentials the backend was given or ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``. Without static credentials (instance roles, web identity) it cannot sign, and the
backend then leaves dangling uploads to a bucket lifecycle rule (``AbortIncompleteMultipartUpload``).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import re
import ssl
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

__all__ = ["Credentials", "MultipartUploads", "Upload", "UploadRequestError", "sign_v4"]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_UNRESERVED = "-_.~"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never show the keys, not even in a debugger's repr
        return "Credentials(***)"


@dataclass(frozen=True, slots=True)
class Upload:
    """One incomplete multipart upload."""

    key: str
    upload_id: str
    initiated: datetime  # aware UTC


class UploadRequestError(OSError):
    """A list or abort request got an error answer; worded like obstore's so the same rules classify it."""

    def __init__(self, what: str, status: int, body: bytes) -> None:
        code = re.search(rb"<Code>([A-Za-z0-9.]+)</Code>", body)
        shown = f" <Code>{code[1].decode()}</Code>" if code else ""
        super().__init__(f"{what}: Server returned non-2xx status code: {status}{shown}")
        self.status = status


def _quote(value: str, *, keep_slash: bool = False) -> str:
    return urllib.parse.quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def sign_v4(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    credentials: Credentials,
    region: str,
    when: datetime,
    payload_sha256: str = EMPTY_SHA256,
) -> dict[str, str]:
    """The headers of an S3 request signed with SigV4: ``headers`` plus host, date, hash and Authorization.

    ``path`` is the raw (unencoded) path; S3 encodes each segment once, keeping ``/``.
    """
    amz_date = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    signed = {k.lower(): " ".join(str(v).strip().split()) for k, v in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    signed["x-amz-content-sha256"] = payload_sha256
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    canonical = "\n".join(
        [
            method,
            _quote(path, keep_slash=True),
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + credentials.secret_access_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {name: signed[name] for name in names}
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


class MultipartUploads:
    """ListMultipartUploads and AbortMultipartUpload on one bucket, path-style (as obstore is set up)."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str | None,
        region: str,
        credentials: Callable[[], Credentials | None],
        timeout: float,
    ) -> None:
        base = endpoint or f"https://s3.{region}.amazonaws.com"
        parsed = urllib.parse.urlsplit(base)
        self._https = parsed.scheme == "https"
        self._host = parsed.netloc
        self._base_path = parsed.path.rstrip("/")
        self._bucket = bucket
        self._region = region
        self._credentials = credentials
        self._timeout = timeout

    def can_sign(self) -> bool:
        return self._credentials() is not None

    def list(self, prefix: str) -> Iterator[Upload]:
        """Every incomplete upload whose key starts with ``prefix`` (all pages)."""
        query = {"uploads": "", "prefix": prefix}
        while True:
            status, body = self._request("GET", "", query)
            if status != 200:
                raise UploadRequestError("listing multipart uploads", status, body)
            root = _parse(body, "listing multipart uploads")
            ns = _NS if root.tag.startswith(_NS) else ""
            for item in root.iter(f"{ns}Upload"):
                key = item.findtext(f"{ns}Key") or ""
                upload_id = item.findtext(f"{ns}UploadId") or ""
                initiated = _parse_time(item.findtext(f"{ns}Initiated") or "")
                if key and upload_id:
                    yield Upload(key, upload_id, initiated)
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
                return
            query = dict(query)
            query["key-marker"] = root.findtext(f"{ns}NextKeyMarker") or ""
            query["upload-id-marker"] = root.findtext(f"{ns}NextUploadIdMarker") or ""

    def last_part_modified(self, key: str, upload_id: str) -> datetime | None:
        """When the upload's latest part arrived; None if it has no parts (or is gone)."""
        query = {"uploadId": upload_id}
        latest: datetime | None = None
        while True:
            status, body = self._request("GET", key, query)
            if status == 404:
                return latest  # completed or aborted meanwhile
            if status != 200:
                raise UploadRequestError("listing the parts of a multipart upload", status, body)
            root = _parse(body, "listing the parts of a multipart upload")
            ns = _NS if root.tag.startswith(_NS) else ""
            for part in root.iter(f"{ns}Part"):
                when = _parse_time(part.findtext(f"{ns}LastModified") or "")
                latest = when if latest is None or when > latest else latest
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
                return latest
            query = {
                "uploadId": upload_id,
                "part-number-marker": root.findtext(f"{ns}NextPartNumberMarker") or "",
            }

    def abort_stale(
        self,
        prefix: str,
        older_than: datetime,
        *,
        ours: Callable[[str], bool],
        call: Callable[[str, Callable[[], Any]], Any],
    ) -> int:
        """Abort the uploads under ``prefix`` whose keys are ``ours`` and idle since before ``older_than``.

        Idle means started before the cutoff and no part received since: an upload still being written
        (a big value on a slow link) keeps going. ``call(action, request)`` runs each request (retries).
        """
        candidates = call(
            "list incomplete multipart uploads",
            lambda: [u for u in self.list(prefix) if ours(u.key) and u.initiated < older_than],
        )
        aborted = 0
        for upload in candidates:
            latest = call(
                f"list the parts of the multipart upload of {upload.key}",
                partial(self.last_part_modified, upload.key, upload.upload_id),
            )
            if latest is not None and latest >= older_than:
                continue
            if call(
                f"abort the multipart upload of {upload.key}",
                partial(self.abort, upload.key, upload.upload_id),
            ):
                aborted += 1
        return aborted

    def abort(self, key: str, upload_id: str) -> bool:
        """Abort one upload; False if it was already gone (completed or aborted by someone else)."""
        status, body = self._request("DELETE", key, {"uploadId": upload_id})
        if status in (200, 204):
            return True
        if status == 404:
            return False
        raise UploadRequestError("aborting a multipart upload", status, body)

    def _request(self, method: str, key: str, query: Mapping[str, str]) -> tuple[int, bytes]:
        credentials = self._credentials()
        if credentials is None:
            raise RuntimeError("MultipartUploads used without static credentials; check can_sign() first")
        path = f"{self._base_path}/{self._bucket}" + (f"/{key}" if key else "")
        headers = sign_v4(
            method=method,
            host=self._host,
            path=path,
            query=query,
            headers={},
            credentials=credentials,
            region=self._region,
            when=datetime.now(UTC),
        )
        target = _quote(path, keep_slash=True)
        if query:
            target += "?" + "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(
                self._host, timeout=self._timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(self._host, timeout=self._timeout)
        try:
            conn.request(method, target, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _parse(body: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        # Worded as a 502 so that it counts as transient: a proxy's error page, a cut-off answer.
        raise UploadRequestError(f"{what} (unreadable answer)", 502, b"") from None


def _parse_time(text: str) -> datetime:
    """S3's ISO 8601 timestamps (``2024-05-01T12:00:00.000Z``); unparseable ones count as very old."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
