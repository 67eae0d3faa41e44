"""The facade's other half: the blob backend that ``[blobs]`` describes (part of ``engine``; reads Settings).

``[[blobs.stores]]`` in order (none: a filesystem store beside the object database) become one
:class:`~objstore.blobs.chain.BlobChain`, with the local cache of ``[blobs.cache]`` in front when it has a
path. A store that cannot be configured (a missing driver, a bad endpoint) fails the open with a
ConfigError naming it; it is never silently left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from objstore.blobs.base import BlobBackend
from objstore.blobs.chain import BlobChain
from objstore.blobs.migrate import MigrationReport, migrate_blobs
from objstore.config import BlobStore, FilesystemBlobStore, HttpBlobStore, S3BlobStore, Settings
from objstore.errors import ConfigError, InvalidValue

__all__ = ["BlobStores", "build_blob_backend", "open_store"]


def open_store(store: BlobStore, position: int) -> BlobBackend:
    """One configured store; ``position`` counts from 1 (messages name ``blobs.stores[position-1]``)."""
    setting = f"blobs.stores[{position - 1}]"
    try:
        if isinstance(store, FilesystemBlobStore):
            from objstore.blobs.filesystem import FilesystemBlobBackend

            return FilesystemBlobBackend(Path(store.path))
        if isinstance(store, S3BlobStore):
            return _s3(store)
        if isinstance(store, HttpBlobStore):
            from objstore.blobs.http import HttpBlobBackend

            return HttpBlobBackend(
                store.host,
                protocol=store.protocol,
                token=None if store.token is None else store.token.get_secret_value(),
                timeout=store.timeout.total_seconds(),
                max_retries=store.max_retries,
                delay=store.delay,
                jitter=store.jitter,
                setting=setting,
            )
    except InvalidValue as error:
        raise ConfigError(f"{setting} ({store.type}): {error}") from None
    raise ConfigError(f"{setting}: unknown blob store type {store.type!r}")


def _s3(store: S3BlobStore) -> BlobBackend:
    try:
        from objstore.blobs.s3 import S3BlobBackend
    except ImportError:
        raise ConfigError(
            f"blob store {store.bucket!r} is of type s3, which needs obstore: install objstore[s3]"
        ) from None

    def secret(value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()

    return S3BlobBackend(
        store.bucket,
        prefix=store.prefix or "",
        region=store.region,
        endpoint=store.endpoint,
        access_key_id=secret(store.access_key_id),
        secret_access_key=secret(store.secret_access_key),
        max_retries=store.max_retries,
        delay=store.delay,
        jitter=store.jitter,
        timeout=store.timeout.total_seconds(),
        part_size=store.part_size,
        max_concurrency=store.max_concurrency,
    )


@dataclass(frozen=True, slots=True)
class BlobStores:
    """The backend the stores use, and each configured store by its label (for migration)."""

    backend: BlobBackend
    by_label: dict[str, BlobBackend]

    def migrate_to(self, label: str, *, progress: Callable[[int], None] | None = None) -> MigrationReport:
        """Copy into store ``label`` (a name, or a position from 1) what the other stores hold."""
        target = self.by_label.get(label)
        if target is None:
            known = ", ".join(self.by_label)
            raise InvalidValue(f"no blob store {label!r}; the configured stores are: {known}")
        sources = [store for store in self.by_label.values() if store is not target]
        return migrate_blobs(sources, target, progress=progress)


def build_blob_backend(settings: Settings) -> BlobStores:
    """Every configured store, in order, behind one backend; the cache in front if configured."""
    opened: list[BlobBackend] = []
    labels: dict[str, BlobBackend] = {}
    swept: list[bool] = []
    try:
        for position, store in enumerate(settings.blob_stores(), start=1):
            opened.append(open_store(store, position))
            swept.append(store.collect_garbage)
            labels[str(position)] = opened[-1]
            if store.name:
                labels[store.name] = opened[-1]
        backend: BlobBackend = opened[0] if swept == [True] else BlobChain(opened, swept=swept)
        cache = settings.blobs.cache
        if cache.path is not None:
            from objstore.blobs.cache import CachedBlobBackend

            try:
                backend = CachedBlobBackend(backend, Path(cache.path), max_bytes=cache.max_bytes)
            except InvalidValue as error:
                raise ConfigError(f"blobs.cache: {error}") from None
        return BlobStores(backend, labels)
    except BaseException:
        for backend_opened in opened:
            backend_opened.close()
        raise
