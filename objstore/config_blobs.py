"""The ``[blobs]`` settings: the inline threshold, the list of blob stores (filesystem, S3-compatible, HTTP)
and the local cache in front of them. Part of :class:`objstore.config.Settings`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr

from objstore.config_types import Duration, Section, WholeNumber

__all__ = [
    "DEFAULT_BLOB_THRESHOLD",
    "STORE_TYPES",
    "BlobCacheSettings",
    "BlobSettings",
    "BlobStore",
    "FilesystemBlobStore",
    "HttpBlobStore",
    "S3BlobStore",
]

DEFAULT_BLOB_THRESHOLD = 131072  # bench/bench_threshold.py: inline is faster up to here (see README)

_STORE_NAME = Field(
    None,
    pattern=r"^[A-Za-z0-9_.-]{1,64}$",
    description="Name of this store in commands (`objstore blobs migrate --to NAME`); default: its "
    "position in the list, from 1.",
)
_COLLECT = (
    "Whether garbage collection and `objstore check --fix` may delete content of this store that no "
    "object of this store's database refers to. Set false for a store whose content other databases "
    "also use (a bucket or folder shared by separate deployments)."
)
_RETRIES = "Retries of a failed request (0: try once); attempt N waits 2^N x delay, +-jitter/2 of that."


class FilesystemBlobStore(Section):
    type: Literal["filesystem"] = "filesystem"
    name: str | None = _STORE_NAME
    path: Path = Field(description="Folder of the content files.", examples=["objstore-data/blobs"])
    collect_garbage: bool = Field(True, description=_COLLECT)


class S3BlobStore(Section):
    type: Literal["s3"] = "s3"
    name: str | None = _STORE_NAME
    bucket: str = Field(min_length=1, description="Bucket name.", examples=["ci-artifacts"])
    prefix: str | None = Field(None, description="Key prefix inside the bucket.", examples=["blobs"])
    region: str | None = Field(None, description="Region of the bucket.", examples=["eu-west-1"])
    endpoint: str | None = Field(
        None, description="URL of an S3-compatible server.", examples=["http://127.0.0.1:7480"]
    )
    access_key_id: SecretStr | None = Field(
        None, description="Access key; unset: AWS_ACCESS_KEY_ID and the usual AWS sources."
    )
    secret_access_key: SecretStr | None = Field(
        None, description="Secret key; unset: AWS_SECRET_ACCESS_KEY and the usual AWS sources."
    )
    max_retries: WholeNumber = Field(6, ge=0, description=_RETRIES)
    delay: float = Field(0.3, ge=0, description="Base delay of the retries, in seconds.")
    jitter: float = Field(0.5, ge=0, le=1, description="Randomness of each retry's delay (0 to 1).")
    timeout: Duration = Field(timedelta(seconds=30), description="Time limit of one request.")
    part_size: WholeNumber = Field(
        8 << 20, ge=5 << 20, description="Bytes per part of a multipart upload (at least 5 MiB)."
    )
    max_concurrency: WholeNumber = Field(
        4, ge=1, description="Parts uploaded at once; memory is about part_size x (max_concurrency + 1)."
    )
    collect_garbage: bool = Field(True, description=_COLLECT)


class HttpBlobStore(Section):
    type: Literal["http"] = "http"
    name: str | None = _STORE_NAME
    host: str = Field(
        min_length=1, description="Another objstore serving /blobs.", examples=["localhost:7777"]
    )
    protocol: Literal["http", "https"] = Field("http", description='"http" or "https".')
    token: SecretStr | None = Field(None, description="Bearer token for that server.")
    max_retries: WholeNumber = Field(3, ge=0, description=_RETRIES)
    delay: float = Field(0.2, ge=0, description="Base delay of the retries, in seconds.")
    jitter: float = Field(0.5, ge=0, le=1, description="Randomness of each retry's delay (0 to 1).")
    timeout: Duration = Field(timedelta(seconds=30), description="Time limit of one request.")
    collect_garbage: bool = Field(
        False,
        description=_COLLECT + " Off by default: the server's content belongs to the objstore that serves "
        "it (whose own garbage collection looks after it), and other clients may share it.",
    )


class BlobCacheSettings(Section):
    path: Path | None = Field(
        None,
        description="Folder of a local cache in front of the blob stores (reads fill it, least recently used "
        "content leaves first); unset: no cache. Never inside a filesystem store's folder.",
        examples=["objstore-data/blob-cache"],
    )
    max_bytes: WholeNumber = Field(10 << 30, ge=1, description="Most bytes the cache keeps.")


BlobStore = FilesystemBlobStore | S3BlobStore | HttpBlobStore
STORE_TYPES: Mapping[str, type[Section]] = {
    "filesystem": FilesystemBlobStore,
    "s3": S3BlobStore,
    "http": HttpBlobStore,
}


class BlobSettings(Section):
    threshold: WholeNumber = Field(
        DEFAULT_BLOB_THRESHOLD,
        ge=0,
        description="Values up to this many bytes are stored inline in the database, larger ones in the blob "
        "store; 0 sends every value to the blob store. The default comes from a benchmark (README).",
    )
    gc_grace_period: Duration = Field(
        timedelta(hours=1),
        description="Unreferenced content younger than this is kept by garbage collection (in-flight puts).",
    )
    stores: list[Annotated[BlobStore, Field(discriminator="type")]] = Field(
        default_factory=list,
        description="Blob stores: the first is written to, the others are read in turn. None: a filesystem "
        "store in a `blobs` folder beside the object database.",
    )
    cache: BlobCacheSettings = Field(
        default_factory=BlobCacheSettings, description="A fast local tier in front of the blob stores."
    )
