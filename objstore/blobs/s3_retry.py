"""Failures of S3 requests: which are transient, how long to wait before retrying, how to report them.

Retry timing follows NativeLink's cloud store settings (what users of S3 caches expect): retry ``k`` (1-based)
waits ``2^(k-1) * delay * (1 ± jitter/2)``, at most ``max_retries`` retries after the first attempt.

obstore's own ``RetryConfig`` cannot express that: its backoff is "decorrelated jitter" (the first wait is
exactly ``init_backoff``, each later one uniform in ``[init_backoff, base * previous]``), with no parameter
for a symmetric jitter band. So every request objstore can replay goes through :meth:`Retrier.call` with
obstore's retries off; only the parts of a multipart upload, which obstore sends from inside one call, use
:meth:`RetryPolicy.obstore_config`, the nearest obstore equivalent (documented there).

Timeouts are never retried by :meth:`Retrier.call`: a server that stayed silent for ``timeout`` seconds is
hung or overloaded, and retrying would multiply the caller's wait by ``max_retries + 1``.
"""

from __future__ import annotations

import errno
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, TypeVar

from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError

from objstore.errors import InvalidValue, ObjStoreError, StorageError

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import RetryConfig

__all__ = ["Failure", "Retrier", "RetryPolicy", "classify"]

T = TypeVar("T")

Kind = Literal["missing", "transient", "timeout", "denied", "no-bucket", "fatal"]

_STATUS = re.compile(r"status code: (\d{3})(?: ([A-Za-z][A-Za-z ]*))?")
_CODE = re.compile(r"<Code>([A-Za-z0-9.]+)</Code>")
# S3 error codes that mean "try again" whatever the status says.
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"})
_TRANSIENT_STATUS = frozenset({408, 429})
_RETRIED = re.compile(r"after (\d+) retries")


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong with one request, in the terms the backend's messages and retries need."""

    kind: Kind
    detail: str  # short, one line, no credentials (obstore's texts name the URL, never the keys)
    status: int | None = None
    retried: int = 0  # retries obstore itself made before giving up (multipart parts)


def classify(exc: BaseException) -> Failure:
    """Sort an obstore (or socket) exception into a :class:`Failure`."""
    failure = _classify(exc)
    retried = _RETRIED.search(str(exc))
    if retried:
        return Failure(failure.kind, failure.detail, failure.status, int(retried[1]))
    return failure


def _classify(exc: BaseException) -> Failure:
    text = str(exc)
    status_match = _STATUS.search(text)
    status = int(status_match[1]) if status_match else None
    code_match = _CODE.search(text)
    code = code_match[1] if code_match else None
    if status is not None:
        reason = (status_match[2] or "").strip() if status_match else ""
        detail = f"HTTP {status}{' ' + reason if reason else ''}{f' ({code})' if code else ''}"
    else:
        detail = _first_line(text) or type(exc).__name__
    if code == "NoSuchBucket":
        return Failure("no-bucket", detail, status)
    if isinstance(exc, FileNotFoundError):
        return Failure("missing", detail, status)
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or status in (401, 403):
        return Failure("denied", detail, status)
    # obstore's debug text names reqwest's error kind; a timeout also reads "error sending request".
    if "kind: Timeout" in text or "TimedOut" in text or isinstance(exc, TimeoutError):
        return Failure("timeout", "no answer in time", status)
    if status is not None:
        if status >= 500 or status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES:
            return Failure("transient", detail, status)
        return Failure("fatal", detail, status)
    if isinstance(exc, ConnectionError) or any(
        marker in text
        for marker in (
            "kind: Connect",
            "kind: Request",
            "kind: Body",
            "kind: Decode",
            "error sending request",
        )
    ):
        return Failure("transient", "connection failed" if "kind: Connect" in text else detail, None)
    return Failure("fatal", detail, None)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    # obstore prefixes "Generic S3 error: Error performing PUT <url> in 1.2ms - "; keep what follows.
    _, sep, rest = line.partition(" - ")
    line = rest if sep else line
    return line if len(line) <= 200 else line[:197] + "..."


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` retries after the first attempt; retry ``k`` waits ``2^(k-1)·delay·(1 ± jitter/2)``."""

    max_retries: int = 6
    delay: float = 0.3
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise InvalidValue(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if not isinstance(self.delay, int | float) or not 0 <= self.delay <= 3600:
            raise InvalidValue(f"delay must be between 0 and 3600 seconds, got {self.delay!r}")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise InvalidValue(f"jitter must be between 0.0 and 1.0, got {self.jitter!r}")

    def wait(self, retry: int, rng: random.Random) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based)."""
        spread = self.jitter * (rng.random() - 0.5)  # uniform in [-jitter/2, +jitter/2)
        return float(2 ** (retry - 1)) * self.delay * (1 + spread)

    def max_total_wait(self) -> float:
        """The longest the waits of all retries can add up to."""
        return sum(float(2**k) * self.delay * (1 + self.jitter / 2) for k in range(self.max_retries))

    def obstore_config(self, timeout: float) -> RetryConfig:
        """obstore's nearest equivalent, for the parts obstore sends itself inside a multipart upload.

        Same number of retries; the first wait is ``delay`` (as ours without jitter), each later one drawn
        by obstore between ``delay`` and twice the previous (so doubling on average, like ours), capped at
        our longest possible wait. ``retry_timeout`` = ``timeout``: a part gets ``timeout`` seconds from its
        first attempt for its retries, so a part that timed out is not retried (as with our own requests)
        and a stalled server fails an upload within about twice ``timeout`` (the part, then the abort).
        The defaults leave room for every retry (6 retries wait at most 23.6 s of the 30 s); with a larger
        ``delay``, the retries of one part end when its ``timeout`` is used up.
        """
        # obstore draws from [init, base·previous): an empty range (delay 0) would panic, so floor at 1 ms.
        init = max(self.delay, 0.001)
        cap = max(init, (2 ** max(self.max_retries - 1, 0)) * self.delay * (1 + self.jitter / 2))
        return {
            "max_retries": self.max_retries,
            "backoff": {
                "init_backoff": timedelta(seconds=init),
                "max_backoff": timedelta(seconds=cap),
                "base": 2,
            },
            "retry_timeout": timedelta(seconds=timeout),
        }


class Retrier:
    """Runs one replayable request under a :class:`RetryPolicy`; turns what is left into StorageError."""

    def __init__(
        self,
        policy: RetryPolicy,
        describe: Callable[[str, Failure, int], StorageError],
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self._describe = describe
        self.rng = rng or random.Random()
        self.sleep = sleep

    def call(self, action: str, request: Callable[[], T], *, missing_ok: bool = False) -> T:
        """``request()``, retried on transient failures; ``action`` completes "cannot ..." in messages.

        With ``missing_ok`` a not-found answer is re-raised as the ``FileNotFoundError`` obstore gave, for the
        caller to interpret; otherwise it is a StorageError like any other failure.
        """
        retry = 0
        while True:
            try:
                return request()
            except ObjStoreError:
                raise  # ours (e.g. InvalidValue from the caller's chunks), already meaningful
            except (BaseError, OSError) as exc:
                failure = classify(exc)
                if failure.kind == "missing" and missing_ok:
                    raise
                if failure.kind == "transient" and retry < self.policy.max_retries:
                    retry += 1
                    self.sleep(self.policy.wait(retry, self.rng))
                    continue
                raise self._describe(action, failure, retry + 1) from None

    def listing(
        self, action: str, pages: Callable[[str | None], Iterable[Sequence[ObjectMeta]]]
    ) -> Iterator[ObjectMeta]:
        """Every object of a listing; ``pages(after)`` lists the keys after ``after`` (None: from the start).

        A page that fails transiently is asked for again, after the last key already seen, so a long
        listing neither starts over nor yields an object twice.
        """
        after: str | None = None
        retry = 0
        while True:
            try:
                for page in pages(after):
                    for meta in page:
                        after = meta["path"]
                        yield meta
                    retry = 0
                return
            except ObjStoreError:
                raise
            except (BaseError, OSError) as exc:
                failure = classify(exc)
                if failure.kind != "transient" or retry >= self.policy.max_retries:
                    raise self._describe(action, failure, retry + 1) from None
                retry += 1
                self.sleep(self.policy.wait(retry, self.rng))

    def failure_error(self, action: str, exc: BaseException, attempts: int = 1) -> StorageError:
        """Translate one exception without retrying (for calls that cannot be replayed)."""
        failure = classify(exc)
        return self._describe(action, failure, max(attempts, failure.retried + 1))


def advice(
    failure: Failure, *, attempts: int, timeout: float, where: str, bucket: str
) -> tuple[str, int | None]:
    """What to tell the user about ``failure``, and the errno that fits it (StorageError is an OSError)."""
    if failure.kind == "timeout":
        return (
            f"the server did not answer within {timeout:g} s; check that {where} is up and reachable, "
            "or raise the `timeout` setting",
            errno.ETIMEDOUT,
        )
    if failure.kind == "denied":
        return (
            "access denied: check the credentials (the access_key_id/secret_access_key settings or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and the bucket's permissions",
            errno.EACCES,
        )
    if failure.kind == "no-bucket":
        return f"bucket {bucket!r} does not exist at {where}: create it or fix the `bucket` setting", None
    if failure.kind == "transient":
        tried = f"still failing after {attempts} attempt{'s' if attempts != 1 else ''}"
        return (
            f"{tried}; check that {where} is up and healthy, or raise `max_retries`/`delay` to ride out "
            "longer outages",
            errno.EIO,
        )
    return f"unexpected answer from {where}; check the endpoint, region and bucket settings", errno.EIO


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace any credential value that found its way into ``text`` (defence in depth)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
