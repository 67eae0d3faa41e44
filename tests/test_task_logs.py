"""Task execution logs: append, read whole or streamed, the finished marker, expiry, masking."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from objstore import InvalidName, InvalidValue, RunExpired, TaskLogNotFound
from objstore.engine import ObjStore
from tests.conftest import StoreFactory


def test_write_read_and_finish(store: ObjStore, data_dir: Path) -> None:
    run = store.pipeline("default", "build").start_run()
    log = run.task_log("compile")
    assert not log.exists() and not log.finished
    assert log.write("line 1\n") == 7
    log.write(b"line 2\n")
    log.write("ünïcode\n")
    assert log.read() == "line 1\nline 2\nünïcode\n".encode()
    assert not log.finished
    log.finish()
    log.finish()  # twice is harmless
    assert log.finished
    assert run.task_logs() == ["compile"]
    path = data_dir / "task-logs" / "default" / "build" / "1" / "compile.log"
    assert log.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # Another handle (another process, later) sees the same log and that it is done.
    again = store.pipeline("default", "build").run(1).task_log("compile")
    assert again.finished and again.read() == log.read()
    with pytest.raises(InvalidValue, match="finished"):
        again.write("more")


def test_context_manager_finishes_the_log(store: ObjStore) -> None:
    run = store.pipeline("default", "build").start_run()
    with run.task_log("test") as log:
        log.write("ok\n")
    assert log.finished
    with pytest.raises(RuntimeError), run.task_log("fails") as failing:
        failing.write("boom\n")
        raise RuntimeError("task failed")
    assert failing.finished and failing.read() == b"boom\n"


def test_missing_log_and_bad_names(store: ObjStore) -> None:
    run = store.pipeline("default", "build").start_run()
    with pytest.raises(TaskLogNotFound, match="nothing has been written"):
        run.task_log("never").read()
    with pytest.raises(TaskLogNotFound):
        list(run.task_log("never").stream())
    for bad in ("", "a/b", "../x", "x" * 65, "sp ace"):
        with pytest.raises(InvalidName):
            run.task_log(bad)
    with pytest.raises(InvalidValue):
        run.task_log("t").write(123)  # type: ignore[arg-type]


def test_stream_follows_until_finished(store: ObjStore) -> None:
    run = store.pipeline("default", "build").start_run()
    writer = run.task_log("deploy")
    reader = store.pipeline("default", "build").run(1).task_log("deploy")
    lines = [f"step {i}\n".encode() for i in range(20)]

    def write() -> None:
        for line in lines:
            writer.write(line)
            time.sleep(0.005)
        writer.finish()

    thread = threading.Thread(target=write)
    thread.start()
    received = b"".join(reader.stream(follow=True, poll_interval=0.01, timeout=10))
    thread.join()
    assert received == b"".join(lines)


def test_stream_without_follow_returns_what_is_there(store: ObjStore) -> None:
    log = store.pipeline("default", "build").start_run().task_log("t")
    log.write(b"a" * 200_000)
    chunks = list(log.stream(chunk_size=65536))
    assert [len(c) for c in chunks] == [65536, 65536, 65536, 200_000 - 3 * 65536]
    # Following an unfinished log ends quietly at the timeout.
    started = time.monotonic()
    assert b"".join(log.stream(follow=True, poll_interval=0.01, timeout=0.2)) == b"a" * 200_000
    assert time.monotonic() - started < 5


def test_expiry_2_keeps_the_logs_of_the_last_two_runs(make_store: StoreFactory, data_dir: Path) -> None:
    store = make_store(api={"task_execution_log_expiry": 2})
    pipe = store.pipeline("default", "build")
    for _ in range(10):
        run = pipe.start_run()
        with run.task_log("compile") as log:
            log.write(f"run {run.number}\n")
        run.task_log("test").write("unfinished\n")
    folder = data_dir / "task-logs" / "default" / "build"
    assert sorted(int(p.name) for p in folder.iterdir()) == [9, 10]
    assert pipe.run(10).task_log("compile").read() == b"run 10\n"
    with pytest.raises(TaskLogNotFound, match="expired"):
        pipe.run(8).task_log("compile").read()
    with pytest.raises(RunExpired):
        pipe.run(8).task_log("compile").write("late\n")
    assert not (folder / "8").exists()  # the refused write left nothing behind


def test_a_write_into_a_log_removed_by_expiry_raises(make_store: StoreFactory) -> None:
    store = make_store(api={"task_execution_log_expiry": 1})
    pipe = store.pipeline("default", "build")
    log = pipe.start_run().task_log("long")
    log.write("started\n")
    pipe.start_run()  # run 1 expires while its task still writes
    with pytest.raises(RunExpired):
        log.write("still going\n")


def test_lowering_the_expiry_and_pruning_removes_more(make_store: StoreFactory, data_dir: Path) -> None:
    store = make_store(api={"task_execution_log_expiry": 2}, object_store={"run_object_expiry": 2})
    pipe = store.pipeline("default", "build")
    for _ in range(10):
        run = pipe.start_run()
        run.objects.put("junit.xml", b"<xml/>")
        run.task_log("compile").write("x\n")
    store.close()
    lowered = make_store(api={"task_execution_log_expiry": 1}, object_store={"run_object_expiry": 1})
    dry = lowered.prune(dry_run=True)
    assert (dry.task_logs, dry.run_objects) == (1, 1)
    assert (data_dir / "task-logs" / "default" / "build" / "9").exists()
    report = lowered.prune()
    assert (report.task_logs, report.run_objects) == (1, 1)
    pipe = lowered.pipeline("default", "build")
    assert not (data_dir / "task-logs" / "default" / "build" / "9").exists()
    assert pipe.run(9).objects.list() == []
    assert [o.key for o in pipe.run(10).objects.list()] == ["junit.xml"]
    assert pipe.run(10).task_log("compile").read() == b"x\n"


def test_sweep_removes_what_a_crash_left_behind(make_store: StoreFactory, data_dir: Path) -> None:
    store = make_store(api={"task_execution_log_expiry": 2})
    pipe = store.pipeline("default", "build")
    for _ in range(5):
        pipe.start_run().task_log("t").write("x")
    # A crash between starting run 5 and expiring: a stale folder of run 1 reappears (e.g. restored).
    stale = data_dir / "task-logs" / "default" / "build" / "1"
    stale.mkdir(mode=0o700)
    (stale / "t.log").write_bytes(b"left behind")
    assert store.prune().task_logs == 1
    assert not stale.exists()


def test_masking_secrets_in_a_task_log(make_store: StoreFactory) -> None:
    store = make_store(secret_store={"sqlite": {"encryption_key": "k" * 32}})
    pipe = store.pipeline("default", "build")
    pipe.secrets.put("TOKEN", "s3cr3t-token-value")
    log = pipe.start_run().task_log("deploy", mask_secrets=True)
    log.write("using s3cr3t-tok")  # the value split across two writes
    log.write("en-value now\n")
    log.finish()
    assert log.read() == b"using **** now\n"


def test_umask_does_not_widen_log_modes(store: ObjStore) -> None:
    old = os.umask(0)
    try:
        log = store.pipeline("default", "build").start_run().task_log("t")
        log.write("x")
        log.finish()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
