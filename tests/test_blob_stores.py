"""Several blob stores as one (the first takes writes, the others are read in turn), the local cache in
front of them, and `objstore blobs migrate` between them, through the public API and the command line."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import blob_http_support as support
import pytest
from blob_contract import BlobBackendContract, read_back, sha
from click.testing import CliRunner

from objstore.blobs.base import BlobBackend
from objstore.blobs.chain import BlobChain
from objstore.blobs.filesystem import FilesystemBlobBackend
from objstore.blobs.http_server import BlobServer
from objstore.cli.main import cli
from objstore.config import Settings
from objstore.engine import ObjStore
from objstore.errors import ConfigError, IntegrityError, StorageError
from tests.conftest import StoreFactory

# The HTTP blob server's fixtures, found by pytest under these names.
serve = support.serve
stored = support.stored
TOKEN = support.TOKEN

BIG = b"large artifact " * 20_000  # above the inline threshold: goes to the blob stores


def _stores(tmp_path: Path, *names: str) -> dict[str, Any]:
    return {"stores": [{"type": "filesystem", "name": name, "path": str(tmp_path / name)} for name in names]}


def _content_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*/*") if p.is_file() and p.parent.name != ".staging"]


def test_writes_go_to_the_first_store_and_reads_fall_back(make_store: StoreFactory, tmp_path: Path) -> None:
    old = make_store(blobs=_stores(tmp_path, "old"))
    old.pipeline("default", "p").objects.put("legacy", BIG + b"1")
    old.close()
    both = make_store(blobs=_stores(tmp_path, "new", "old"))
    objects = both.pipeline("default", "p").objects
    objects.put("fresh", BIG + b"2")
    assert len(_content_files(tmp_path / "new")) == 1 and len(_content_files(tmp_path / "old")) == 1
    assert objects.get("legacy") == BIG + b"1"  # found in the second store
    assert objects.get("fresh") == BIG + b"2"
    assert both.check().ok  # content in any store counts as present


def test_migrate_copies_verified_and_resumes(make_store: StoreFactory, tmp_path: Path) -> None:
    old = make_store(blobs=_stores(tmp_path, "old"))
    for i in range(5):
        old.pipeline("default", "p").objects.put(f"k{i}", BIG + bytes([i]))
    old.close()
    store = make_store(blobs=_stores(tmp_path, "new", "old"))
    first = store.migrate_blobs("new")
    assert (first.copied, first.already_there, first.failed) == (5, 0, [])
    again = store.migrate_blobs("1")  # by position: the same store
    assert (again.copied, again.already_there) == (0, 5)
    for path in _content_files(tmp_path / "old"):
        path.unlink()  # the old store is gone: everything must come from the new one
    assert [store.pipeline("default", "p").objects.get(f"k{i}") for i in range(5)] == [
        BIG + bytes([i]) for i in range(5)
    ]


def test_migrate_refuses_to_copy_corrupt_content(make_store: StoreFactory, tmp_path: Path) -> None:
    old = make_store(blobs=_stores(tmp_path, "old"))
    old.pipeline("default", "p").objects.put("good", BIG + b"g")
    old.pipeline("default", "p").objects.put("bad", BIG + b"b")
    bad = old.pipeline("default", "p").objects.info("bad").sha256
    old.close()
    (path,) = [p for p in _content_files(tmp_path / "old") if p.name == bad]
    path.chmod(0o600)
    path.write_bytes(b"X" + path.read_bytes()[1:])
    store = make_store(blobs=_stores(tmp_path, "new", "old"))
    report = store.migrate_blobs("new")
    assert report.copied == 1 and len(report.failed) == 1 and bad in report.failed[0]
    assert [p.name for p in _content_files(tmp_path / "new")] != [bad]
    with pytest.raises(IntegrityError):
        store.pipeline("default", "p").objects.get("bad")


def test_migrate_unknown_store_names_the_known_ones(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(blobs=_stores(tmp_path, "new", "old"))
    with pytest.raises(Exception, match=r"no blob store 'nowhere'.*new.*old"):
        store.migrate_blobs("nowhere")


def test_blobs_migrate_command(tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "objstore.toml"
    config.write_text('[[blobs.stores]]\ntype = "filesystem"\nname = "old"\npath = "old"\n')
    with ObjStore(Settings.load(config)) as store:
        store.pipeline("default", "p").objects.put("k", BIG)
    config.write_text(
        '[[blobs.stores]]\ntype = "filesystem"\nname = "new"\npath = "new"\n'
        '[[blobs.stores]]\ntype = "filesystem"\nname = "old"\npath = "old"\n'
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "blobs", "migrate", "--to", "new", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["copied"] == 1
    missing = CliRunner().invoke(cli, ["--config", str(config), "blobs", "migrate", "--to", "3"])
    assert missing.exit_code != 0 and "no blob store '3'" in missing.stderr
    assert "Traceback" not in missing.output


class _Unreachable(FilesystemBlobBackend):
    """A real store whose reads fail as a broken network store's would."""

    def open(self, sha256: str) -> Any:
        raise StorageError("store unreachable")

    def exists(self, sha256: str) -> bool:
        raise StorageError("store unreachable")


def test_a_failing_store_is_logged_and_the_next_one_tried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = FilesystemBlobBackend(tmp_path / "good")
    staged = good.stage([b"content"])
    good.publish(staged)
    good.discard(staged)
    chain = BlobChain([_Unreachable(tmp_path / "bad"), good])
    with caplog.at_level(logging.WARNING, logger="objstore.blobs"), chain.open(staged.sha256) as reader:
        assert reader.read() == b"content"
    assert "store unreachable" in caplog.text
    alone = BlobChain([_Unreachable(tmp_path / "bad")])
    with pytest.raises(StorageError):  # not "missing": the store could not say
        alone.open(staged.sha256)


def test_a_store_that_cannot_be_configured_fails_the_open(make_store: StoreFactory) -> None:
    with pytest.raises(ConfigError, match=r"blobs.stores\[1\]"):
        make_store(
            blobs={
                "stores": [
                    {"type": "filesystem", "path": "blobs"},
                    {"type": "s3", "bucket": "b", "endpoint": "ftp://nowhere"},
                ]
            }
        )


def test_the_cache_serves_reads_after_the_store_is_gone(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(blobs={**_stores(tmp_path, "remote"), "cache": {"path": str(tmp_path / "cache")}})
    objects = store.pipeline("default", "p").objects
    objects.put("k", BIG)
    assert objects.get("k") == BIG  # a miss: fills the cache
    for path in _content_files(tmp_path / "remote"):
        path.chmod(0o600)
        path.write_bytes(b"damaged")  # a hit must not even read the store
    assert objects.get("k") == BIG
    with pytest.raises(ConfigError, match=r"blobs\.cache"):
        make_store(blobs={**_stores(tmp_path, "remote"), "cache": {"path": str(tmp_path / "remote")}})


class TestChainContract(BlobBackendContract):
    """Two stores as one pass the contract every backend passes."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[BlobBackend]:
        chain = BlobChain([FilesystemBlobBackend(tmp_path / "a"), FilesystemBlobBackend(tmp_path / "b")])
        yield chain
        chain.close()


# -- garbage collection sweeps only the stores this database owns ------------------------------------------


def test_gc_and_check_leave_a_shared_store_alone(make_store: StoreFactory, tmp_path: Path) -> None:
    blobs = _stores(tmp_path, "own", "shared")
    blobs["stores"][1]["collect_garbage"] = False
    shared = FilesystemBlobBackend(tmp_path / "shared")
    theirs = support.put(shared, BIG + b"another database's")  # no row of this database refers to it
    store = make_store(blobs=blobs)
    objects = store.pipeline("default", "p").objects
    objects.put("dropped", BIG + b"mine")
    objects.delete("dropped")  # its content is now garbage in the store this database owns
    assert store.check().orphan_blobs == [sha(BIG + b"mine")]
    assert store.check(fix=True).fixed
    assert store.collect_garbage(timedelta(0)).blobs_removed == 0  # check --fix took it already
    assert _content_files(tmp_path / "own") == []
    assert read_back(shared, theirs) == BIG + b"another database's"
    assert store.check().ok


def test_gc_through_an_http_store_never_deletes_the_servers_content(
    make_store: StoreFactory, tmp_path: Path, serve: Callable[..., BlobServer], stored: FilesystemBlobBackend
) -> None:
    server = serve()  # deletes allowed: the client's default alone must keep the content safe
    theirs = support.put(stored, BIG + b"the server's own")
    store = make_store(
        blobs={"stores": [{"type": "http", "host": f"127.0.0.1:{server.port}", "token": TOKEN}]}
    )
    objects = store.pipeline("default", "p").objects
    objects.put("shared", BIG + b"written through http")
    assert objects.get("shared") == BIG + b"written through http"
    objects.delete("shared")
    assert store.collect_garbage(timedelta(0)).blobs_removed == 0
    report = store.check(fix=True)
    assert report.orphan_blobs == []
    assert read_back(stored, theirs) == BIG + b"the server's own"
    assert stored.exists(sha(BIG + b"written through http"))


def test_an_http_store_is_swept_only_when_configured(
    make_store: StoreFactory, tmp_path: Path, serve: Callable[..., BlobServer], stored: FilesystemBlobBackend
) -> None:
    server = serve()
    store = make_store(
        blobs={
            "stores": [
                {
                    "type": "http",
                    "host": f"127.0.0.1:{server.port}",
                    "token": TOKEN,
                    "collect_garbage": True,  # this database is the server's only user
                }
            ]
        }
    )
    objects = store.pipeline("default", "p").objects
    objects.put("dropped", BIG + b"garbage")
    objects.delete("dropped")
    assert store.collect_garbage(timedelta(0)).blobs_removed == 1
    assert not stored.exists(sha(BIG + b"garbage"))


def test_collect_garbage_defaults_per_store_type() -> None:
    settings = Settings(
        blobs={
            "stores": [
                {"type": "filesystem", "path": "/srv/blobs"},
                {"type": "s3", "bucket": "b"},
                {"type": "http", "host": "localhost:7777"},
            ]
        }
    )
    assert [store.collect_garbage for store in settings.blobs.stores] == [True, True, False]
