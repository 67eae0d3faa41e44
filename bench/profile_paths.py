"""Where objstore's time goes on the small put/get paths and at start-up (diagnosis, not a benchmark).

- SQL time per statement: the store's per-thread sqlite3 connection is swapped for a proxy that times
  every ``execute`` and the ``fetch*`` of its cursor, keyed by statement; the rest of each call is Python.
- WAL frames (pages) written per put, objstore against raw sqlite3 and diskcache: what a commit costs
  grows with the pages it dirties.
- Start-up: cProfile of ``import objstore.config`` with pydantic already imported (the cost of building
  the settings models themselves), and who pulls in the heavy packages.

Prints a report and writes bench/results/profile.json.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import fresh_dir, open_store, parser, table, write_json

VALUE = os.urandom(100)


class _TimedCursor:
    def __init__(self, cursor: sqlite3.Cursor, key: str, sink: dict[str, list[float]]) -> None:
        self._cursor, self._key, self._sink = cursor, key, sink

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        start = time.perf_counter()
        row = self._cursor.fetchone()
        self._sink[self._key][0] += time.perf_counter() - start
        return row

    def fetchall(self) -> list[Any]:
        start = time.perf_counter()
        rows = self._cursor.fetchall()
        self._sink[self._key][0] += time.perf_counter() - start
        return rows


class TimedConnection:
    """Forwards to a sqlite3 connection, adding each statement's execute+fetch time to ``sink``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.sink: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self.recorded: list[tuple[str, Any]] | None = None  # set to a list to record (sql, params)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, params: Any = ()) -> _TimedCursor:
        if self.recorded is not None:
            self.recorded.append((sql, dict(params) if isinstance(params, dict) else params))
        key = " ".join(sql.split())[:70]
        start = time.perf_counter()
        cursor = self._conn.execute(sql, params)
        entry = self.sink[key]
        entry[0] += time.perf_counter() - start
        entry[1] += 1
        return _TimedCursor(cursor, key, self.sink)

    def close(self) -> None:
        self._conn.close()


def _instrument(database: Any) -> TimedConnection:
    """Route this thread's statements through a TimedConnection.

    Reaches into Database's per-thread state: ``_local.connection`` (what ``connection()`` returns) and,
    where present, ``_local.cursor`` (the reused cursor of point reads). Both are swapped for the proxy,
    which has the ``execute``/``fetch*`` surface they are used through.
    """
    timed = TimedConnection(database.connection())
    database._local.connection = timed
    if hasattr(database._local, "cursor"):
        database._local.cursor = timed
    return timed


def _uninstrument(database: Any, timed: TimedConnection) -> None:
    database._local.connection = timed._conn
    if hasattr(database._local, "cursor"):
        database._local.cursor = timed._conn.cursor()


def _breakdown(timed: TimedConnection, total: float, calls: int) -> list[list[str]]:
    rows = []
    sql_total = 0.0
    for key, (seconds, count) in sorted(timed.sink.items(), key=lambda kv: -kv[1][0]):
        sql_total += seconds
        share = f"{seconds / total * 100:.0f}%"
        rows.append([key, f"{count / calls:.2f}", f"{seconds / calls * 1e6:.1f}", share])
    python = total - sql_total
    label = "(Python around the SQL: validation, hashing, objects, proxy)"
    rows.append([label, "", f"{python / calls * 1e6:.1f}", f"{python / total * 100:.0f}%"])
    rows.append(["total per call", "", f"{total / calls * 1e6:.1f}", "100%"])
    return rows


def profile_put(base: Path | None, n: int) -> dict[str, Any]:
    with fresh_dir(base) as folder:
        store = open_store(folder)
        objects = store.pipeline("bench", "profile").objects
        for i in range(60):  # past the limit: steady state, every put evicts one
            objects.put(f"w{i}", VALUE)
        timed = _instrument(store.object_db)
        start = time.perf_counter()
        for i in range(n):
            objects.put(f"k{i:07d}", VALUE)
        total = time.perf_counter() - start
        store.close()
    return {"rows": _breakdown(timed, total, n), "total_us": total / n * 1e6}


def profile_get(base: Path | None, n: int) -> dict[str, Any]:
    with fresh_dir(base) as folder:
        store = open_store(folder, object_store={"pipeline_object_limit": 10_000})
        objects = store.pipeline("bench", "profile").objects
        keys = [f"k{i:07d}" for i in range(10_000)]
        for key in keys:
            objects.put(key, VALUE)
        rng = random.Random(3)
        lookups = [rng.choice(keys) for _ in range(n)]
        timed = _instrument(store.object_db)
        start = time.perf_counter()
        for key in lookups:
            objects.get(key)
        total = time.perf_counter() - start
        # The Python steps of a get, timed alone on the same keys.
        from objstore.names import validate_key

        steps: dict[str, float] = {}
        store_objects = store.objects
        lap = time.perf_counter()
        for key in lookups:
            validate_key(key)
        steps["validate_key(key)"] = time.perf_counter() - lap
        lap = time.perf_counter()
        for key in lookups:
            store_objects._what("bench", "profile", 0, key)
        steps["ObjectStore._what(...) message built on every get"] = time.perf_counter() - lap
        import hashlib

        lap = time.perf_counter()
        for _ in lookups:
            hashlib.sha256(VALUE).hexdigest()
        steps["sha256 of the inline value (ContentStore.read)"] = time.perf_counter() - lap
        store.close()
    return {
        "rows": _breakdown(timed, total, n),
        "total_us": total / n * 1e6,
        "python_steps_us": {k: v / n * 1e6 for k, v in steps.items()},
    }


def _wal_frames(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


def wal_pages_per_put(base: Path | None, n: int = 200) -> dict[str, float]:
    """Pages appended to the WAL per put, with checkpoints kept out of the way."""
    out: dict[str, float] = {}
    with fresh_dir(base) as folder:
        store = open_store(folder)
        objects = store.pipeline("bench", "wal").objects
        for i in range(60):
            objects.put(f"w{i}", VALUE)
        conn = store.object_db.connection()
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for i in range(n):
            objects.put(f"k{i}", VALUE)
        out["objstore put (limit 50, evicting)"] = _wal_frames(conn) / n
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (auto_vacuum,) = conn.execute("PRAGMA auto_vacuum").fetchone()
        store.close()
    with fresh_dir(base) as folder:
        conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB)")
        for i in range(1000):
            conn.execute("INSERT INTO kv VALUES (?, ?)", (f"w{i:07d}", VALUE))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for i in range(n):
            conn.execute("INSERT INTO kv VALUES (?, ?)", (f"k{i:07d}", VALUE))
        out["raw sqlite3 INSERT"] = _wal_frames(conn) / n
        conn.close()
    with fresh_dir(base) as folder:
        import diskcache

        cache = diskcache.Cache(str(folder / "dc"))
        for i in range(1000):
            cache.set(f"w{i}", VALUE)
        conn = cache._sql.__self__  # diskcache's own connection
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for i in range(n):
            cache.set(f"k{i}", VALUE)
        out["diskcache set"] = _wal_frames(conn) / n
        cache.close()
    out["page_size"] = page_size
    out["objstore auto_vacuum (0 none, 1 full, 2 incremental)"] = auto_vacuum
    return out


def _schema_db(path: Path, ddl: list[str], auto_vacuum: int, scopes: set[int]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    for statement in ddl:
        conn.execute(statement)
    for scope in scopes:  # the parent rows the recorded statements refer to
        conn.execute(
            "INSERT INTO object_pipelines (id, namespace, pipeline, last_run, expired_through) "
            "VALUES (?, 'bench', ?, 0, 0)",
            (scope, f"replay-{scope}"),
        )
    return conn


def _record(database: Any, action: Any) -> list[tuple[str, Any]]:
    """The (sql, params) statements objstore runs for ``action()``, read off its own connection."""
    timed = _instrument(database)
    timed.recorded = []
    action()
    recorded = timed.recorded
    _uninstrument(database, timed)
    if not recorded:
        raise RuntimeError("recorded no statement: objstore's Database internals changed; update _instrument")
    return recorded


def _replay(execute: Any, statements: list[tuple[str, Any]], key: str) -> None:
    for sql, recorded in statements:
        params = {**recorded, "key": key} if isinstance(recorded, dict) and "key" in recorded else recorded
        cursor = execute(sql, params)
        if "SELECT" in sql or "RETURNING" in sql:
            cursor.fetchall()


def _interleaved(variants: dict[str, Any], passes: int, base: Path | None) -> dict[str, list[Any]]:
    results: dict[str, list[Any]] = defaultdict(list)
    names = list(variants)
    for i in range(passes):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            with fresh_dir(base) as folder:
                results[name].append(variants[name](folder))
    return results


def replay_put_sql(base: Path | None, n: int, passes: int = 3) -> list[list[str]]:
    """The statements of a real put (recorded), replayed on a plain connection without objstore's
    Python, and variants of them. The variants are experiments on a copy of the schema, not changes to
    objstore: they show what each part of the sequence costs. Interleaved passes, medians.
    """
    with fresh_dir(base) as folder:
        store = open_store(folder / "store")
        objects = store.pipeline("bench", "replay").objects
        for i in range(60):  # past the limit: the recorded put evicts, like every steady-state put
            objects.put(f"w{i}", VALUE)
        conn = store.object_db.connection()
        ddl = [
            sql
            for (sql,) in conn.execute(
                "SELECT sql FROM sqlite_master "
                "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
            )
        ]
        put_statements = _record(store.object_db, lambda: objects.put("probe", VALUE))
        store.close()
    scope_ids = {p["scope"] for _, p in put_statements if isinstance(p, dict) and "scope" in p}

    def variant(auto_vacuum: int, extra_ddl: list[str], keep: Any, autocommit: bool = False) -> Any:
        statements = [(sql, p) for sql, p in put_statements if keep(sql)]
        if autocommit:
            statements = [(sql, p) for sql, p in statements if sql not in ("BEGIN IMMEDIATE", "COMMIT")]

        def run(folder: Path) -> tuple[float, float]:
            conn = _schema_db(folder / "replay.db", [*ddl, *extra_ddl], auto_vacuum, scope_ids)
            execute = conn.execute
            for i in range(60):
                _replay(execute, statements, f"w{i}")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            start = time.perf_counter()
            for i in range(n):
                _replay(execute, statements, f"k{i:07d}")
            seconds = time.perf_counter() - start
            # Pages per commit, counted on 200 more puts with automatic checkpoints off.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for i in range(200):
                _replay(execute, statements, f"x{i:07d}")
            pages = _wal_frames(conn) / 200
            conn.close()
            return seconds, pages

        return run

    def raw(folder: Path) -> tuple[float, float]:
        conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB)")
        sql = "INSERT INTO kv (key, value) VALUES (?, ?)"
        start = time.perf_counter()
        for i in range(n):
            conn.execute(sql, (f"k{i:07d}", VALUE))
        seconds = time.perf_counter() - start
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for i in range(200):
            conn.execute(sql, (f"x{i:07d}", VALUE))
        pages = _wal_frames(conn) / 200
        conn.close()
        return seconds, pages

    def is_core(sql: str) -> bool:
        return sql in ("BEGIN IMMEDIATE", "COMMIT") or sql.lstrip().startswith("INSERT")

    sequence = " ; ".join(" ".join(sql.split())[:40] for sql, _ in put_statements)
    variants = {
        "a real put's statements as recorded (auto_vacuum=INCREMENTAL)": variant(2, [], lambda _: True),
        "  same, auto_vacuum=NONE": variant(0, [], lambda _: True),
        "  same + index (scope_id, run, id): eviction without a sort": variant(
            2, ["CREATE INDEX bench_scope_run_id ON objects (scope_id, run, id)"], lambda _: True
        ),
        "  only BEGIN IMMEDIATE, INSERT, COMMIT (no limit enforcement)": variant(2, [], is_core),
        "  only the INSERT, autocommit (no limit enforcement)": variant(2, [], is_core, autocommit=True),
        "raw sqlite3 kv INSERT (the benchmark's baseline)": raw,
    }
    results = _interleaved(variants, passes, base)
    rows = [
        [name, f"{statistics.median(r[0] for r in runs) / n * 1e6:.1f}", f"{runs[-1][1]:.2f}"]
        for name, runs in results.items()
    ]
    rows.append([f"(recorded: {sequence})", "", ""])
    return rows


def replay_get_sql(base: Path | None, n: int, passes: int = 3) -> list[list[str]]:
    """The SELECT of a real get (recorded), replayed over the same 10k-object database, and variants."""
    with fresh_dir(base) as folder:
        store = open_store(folder / "store", object_store={"pipeline_object_limit": 10_000})
        objects = store.pipeline("bench", "replay").objects
        keys = [f"k{i:07d}" for i in range(10_000)]
        for key in keys:
            objects.put(key, VALUE)
        (get_sql, get_params), *_ = _record(store.object_db, lambda: objects.get(keys[0]))
        path = store.settings.object_store.sqlite.path
        store.close()
        raw_path = folder / "raw.db"
        raw = sqlite3.connect(raw_path, isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB)")
        raw.executemany("INSERT INTO kv VALUES (?, ?)", [(k, VALUE) for k in keys])
        raw.close()
        rng = random.Random(4)
        lookups = [rng.choice(keys) for _ in range(n)]
        names_in_order = re.findall(r":(\w+)", get_sql)
        positional = re.sub(r":\w+", "?", get_sql)

        def variant(db: Path, sql: str, style: str, pragmas: tuple[str, ...] = ()) -> Any:
            if style == "named":
                params: list[Any] = [{**get_params, "key": k} for k in lookups]
            elif style == "positional":
                params = [tuple({**get_params, "key": k}[name] for name in names_in_order) for k in lookups]
            else:
                params = [(k,) for k in lookups]

            def run(_folder: Path) -> float:
                conn = sqlite3.connect(db, isolation_level=None)
                for pragma in pragmas:
                    conn.execute(pragma)
                execute = conn.execute
                for p in params[:2000]:  # warm SQLite's page cache
                    execute(sql, p).fetchone()
                start = time.perf_counter()
                for p in params:
                    execute(sql, p).fetchone()
                seconds = time.perf_counter() - start
                conn.close()
                return seconds

            return run

        select_list = re.search(r"SELECT (.*?) FROM", get_sql)
        data_only = get_sql.replace(select_list[1], "data") if select_list else get_sql
        variants = {
            "a real get's SELECT as recorded (named params)": variant(path, get_sql, "named"),
            "  same, positional ? params": variant(path, positional, "positional"),
            "  same, cache_size=-32768 (diskcache uses 8192 pages)": variant(
                path, get_sql, "named", ("PRAGMA cache_size=-32768",)
            ),
            "  SELECT data only": variant(path, data_only, "named"),
            "raw sqlite3 kv SELECT (the benchmark's baseline)": variant(
                raw_path, "SELECT value FROM kv WHERE key = ?", "raw"
            ),
        }
        results = _interleaved(variants, passes, base)
        size = path.stat().st_size
    rows = [[name, f"{statistics.median(runs) / n * 1e6:.2f}"] for name, runs in results.items()]
    rows.append([f"(objects.db is {size / 2**20:.1f} MiB; SQLite's default page cache is 2 MiB)", ""])
    rows.append([f"(recorded: {' '.join(get_sql.split())})", ""])
    return rows


_CONFIG_PROFILE = """\
import cProfile, io, pstats, time
import pydantic, pydantic_settings  # imported first: measure only objstore.config's own work
t = time.perf_counter()
profiler = cProfile.Profile()
profiler.enable()
import objstore.config
profiler.disable()
print("objstore.config alone after pydantic: %.1f ms (under cProfile)" % ((time.perf_counter() - t) * 1000))
out = io.StringIO()
pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
print(out.getvalue())
"""

_HEAVY_IMPORTS = """\
import sys, time
t = time.perf_counter(); import pydantic; a = time.perf_counter()
import pydantic_settings; b = time.perf_counter()
import objstore.config; c = time.perf_counter()
import objstore.engine; d = time.perf_counter()
print(f"import pydantic {1000*(a-t):.1f} ms; pydantic_settings {1000*(b-a):.1f} ms; "
      f"objstore.config (rest) {1000*(c-b):.1f} ms; objstore.engine (rest) {1000*(d-c):.1f} ms")
heavy = ("asyncio", "ssl", "email", "sqlalchemy", "alembic", "dotenv")
print("loaded:", {m: m in sys.modules for m in heavy})
"""


def profile_startup() -> dict[str, str]:
    def run(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        return done.stdout

    return {"split": run(_HEAVY_IMPORTS), "config_cprofile": run(_CONFIG_PROFILE)}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    args = p.parse_args(argv)
    n_put, n_get = (2_000, 10_000) if args.quick else (10_000, 50_000)
    put = profile_put(args.tmpdir, n_put)
    get = profile_get(args.tmpdir, n_get)
    wal = wal_pages_per_put(args.tmpdir)
    replay = replay_put_sql(args.tmpdir, n_put)
    replay_get = replay_get_sql(args.tmpdir, n_get)
    startup = profile_startup()
    headers = ["statement", "per call", "µs/call", "share"]
    print(f"\nobjstore put (100 B, limit 50), {n_put} calls: {put['total_us']:.1f} µs each (with proxy)")
    print(table(headers, put["rows"]))
    print(f"\nobjstore get (100 B, 10k keys), {n_get} calls: {get['total_us']:.1f} µs each (with proxy)")
    print(table(headers, get["rows"]))
    print("\nPython steps of a get, timed alone:")
    print(table(["step", "µs"], [[k, f"{v:.2f}"] for k, v in get["python_steps_us"].items()]))
    print("\nWAL pages written per put (each page is one frame: header + 4 KiB, written on commit)")
    print(table(["writer", "pages/put"], [[k, f"{v:.2f}"] for k, v in wal.items()]))
    print("\nput SQL replayed without objstore's Python (plain sqlite3 connection, same schema)")
    print(table(["variant", "µs/put", "WAL pages/put"], replay))
    print("\nget SELECT replayed without objstore's Python (plain sqlite3 connection, 10k objects)")
    print(table(["variant", "µs/get"], replay_get))
    print("\nstart-up:\n" + startup["split"])
    print(startup["config_cprofile"])
    write_json(
        "profile",
        {
            "put": put,
            "get": get,
            "wal_pages_per_put": wal,
            "put_sql_replay": replay,
            "get_sql_replay": replay_get,
            "startup": startup,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
