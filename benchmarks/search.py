"""How fast ``tomlflow logs --search`` answers over 1,000,000 stored lines.

    python benchmarks/search.py [--lines 1000000] [--runs 21] [--db PATH] [--keep]
    python benchmarks/search.py --postgres postgresql+psycopg://postgres@host/postgres

Builds a SQLite file through the normal migrations (so the search index and its triggers are
the real ones), fills ``execution_logs`` with generated output of 10,000 executions in one
``INSERT ... SELECT`` (the triggers index every line as the engine's writes would), then times
``store.search.search`` for a word found in about 200 lines, a word in every line, and two
words together, and prints each median in milliseconds with its ratio to a floor measured in
the same run: reading one execution's lines by primary key, the cheapest indexed read there is.
Then it prints what the index costs a writer: storing 100,000 lines through
``history.insert_logs`` in transactions of 500 (as the engine records output), with the index's
triggers and without them, in CPU time. With ``--postgres SERVER_URL`` it does the same on a
new database on that server (dropped afterwards; the GIN index is maintained by PostgreSQL
itself, so there is no write-cost figure). Exits 1 when the rare word's median misses the
200 ms target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import LogRow
from scheduler.store.search import FTS_TABLE, SearchQuery, search

TARGET_MS = 200.0
EXECUTIONS = 10_000

_EXECUTIONS = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO executions (id, task_id, file_path, task, topic, job, task_time, attempt, trigger,
                        status, info, meta, msg, created_at, not_before)
SELECT i, printf('%08x', i), 'file.toml', 'topic' || (i % 100) || ':job', 'topic' || (i % 100),
       'job', strftime('%Y-%m-%dT%H:00:00.000000Z', '2024-01-01', '+' || i || ' hours'), 1,
       'cron', 'complete', '', '{}', '', '2024-01-01T00:00:00.000000Z',
       '2024-01-01T00:00:00.000000Z'
FROM n
"""

# Line i belongs to execution 1 + i % EXECUTIONS. Words: "processed" in every line, "batchN"
# with N < 5000 (about 200 lines each), and a code from 1,000 values.
_LINES = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :lines)
INSERT INTO execution_logs (execution_id, seq, ts, stream, line)
SELECT 1 + i % :executions, 1 + i / :executions,
       strftime('%Y-%m-%dT%H:%M:%S.000000Z', '2024-01-01', '+' || i || ' seconds'), 'stdout',
       'step ' || (i % 37) || ' processed batch' || (i % 5000) || ' rows=' || (i % 997)
       || ' code E' || (i % 1000) || ' in ' || (i % 311) || 'ms'
FROM n
"""


# The same rows for PostgreSQL (``%%`` is a literal ``%`` for the driver).
_PG_EXECUTIONS = """
INSERT INTO executions (id, task_id, file_path, task, topic, job, task_time, attempt, trigger,
                        status, info, meta, msg, created_at, not_before)
SELECT i, to_hex(i), 'file.toml', 'topic' || (i %% 100) || ':job', 'topic' || (i %% 100), 'job',
       to_char(timestamp '2024-01-01' + i * interval '1 hour', 'YYYY-MM-DD"T"HH24:00:00.000000"Z"'),
       1, 'cron', 'complete', '', '{}', '', '2024-01-01T00:00:00.000000Z',
       '2024-01-01T00:00:00.000000Z'
FROM generate_series(1, %(count)s) i
"""
_PG_LINES = """
INSERT INTO execution_logs (execution_id, seq, ts, stream, line)
SELECT 1 + i %% %(executions)s, 1 + i / %(executions)s,
       to_char(timestamp '2024-01-01' + i * interval '1 second',
               'YYYY-MM-DD"T"HH24:MI:SS.000000"Z"'), 'stdout',
       'step ' || (i %% 37) || ' processed batch' || (i %% 5000) || ' rows=' || (i %% 997)
       || ' code E' || (i %% 1000) || ' in ' || (i %% 311) || 'ms'
FROM generate_series(0, %(lines)s - 1) i
"""


def build(url: str, lines: int) -> Database:
    db = Database(url)
    sqlite = db.is_sqlite
    started = time.perf_counter()
    with db.write() as conn:
        conn.exec_driver_sql(_EXECUTIONS if sqlite else _PG_EXECUTIONS, {"count": EXECUTIONS})
        params = {"lines": lines, "executions": EXECUTIONS}
        conn.exec_driver_sql(_LINES if sqlite else _PG_LINES, params)
    if not sqlite:
        with db.write() as conn:
            conn.exec_driver_sql("ANALYZE execution_logs")
    seconds = time.perf_counter() - started
    print(f"stored {lines:,} lines ({db.engine.dialect.name}, indexed) in {seconds:.1f} s")
    return db


@contextmanager
def server_database(server: str) -> Iterator[str]:
    """A new database on a PostgreSQL server, dropped afterwards."""
    name = f"tomlflow_search_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        admin.dispose()


def write_cost(folder: Path) -> tuple[float, float]:
    """CPU seconds to store 100,000 lines with the search index, and without it."""
    texts = [f"step {i} processed batch{i % 5000} rows={i * 7} in {i % 31}ms" for i in range(500)]
    moment = datetime(2024, 1, 2, tzinfo=UTC)
    results = []
    for indexed in (True, False):
        db = Database(f"sqlite:///{folder / f'write-{indexed}.db'}")
        if not indexed:
            with db.write() as conn:
                for suffix in ("insert", "delete", "update"):
                    conn.exec_driver_sql(f"DROP TRIGGER trg_{FTS_TABLE}_{suffix}")
        started = time.process_time()
        for batch in range(200):
            rows = [LogRow(batch, i + 1, moment, "stdout", t) for i, t in enumerate(texts)]
            with db.write() as conn:
                history.insert_logs(conn, rows)
        results.append(time.process_time() - started)
        db.close()
    return results[0], results[1]


def median_ms(action: Callable[[], object], runs: int) -> float:
    action()  # warm-up: the first read pulls pages into the cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--db", type=Path, help="database file (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument("--postgres", metavar="SERVER_URL", help="measure on PostgreSQL instead")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tomlflow-search-"))
    try:
        if args.postgres:
            with server_database(args.postgres) as url:
                rare = measure(build(url, args.lines), args.runs)
        else:
            rare = measure(
                build(f"sqlite:///{args.db or folder / 'search.db'}", args.lines), args.runs
            )
            with_index, without = write_cost(folder)
            print(
                f"storing 100,000 lines (CPU): {with_index * 1000:.0f} ms indexed, "
                f"{without * 1000:.0f} ms without the index: "
                f"+{(with_index - without) * 10:.1f} us a line"
            )
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    verdict = "ok" if rare <= TARGET_MS else "MISSED"
    print(f"target: a word over {args.lines:,} lines <= {TARGET_MS:.0f} ms: {verdict}")
    return 0 if rare <= TARGET_MS else 1


def measure(db: Database, runs: int) -> float:
    """Print each search's median and its ratio to the floor; return the rare word's median."""

    def searcher(words: str) -> Callable[[], object]:
        def run() -> object:
            with db.read() as conn:
                return search(conn, SearchQuery(words))

        return run

    def floor() -> object:
        with db.read() as conn:
            query = "SELECT seq, ts, stream, line FROM execution_logs WHERE execution_id = 4242"
            return conn.execute(text(query)).all()

    floor_ms = median_ms(floor, runs)
    print(f"floor (one execution's lines by primary key): {floor_ms:.2f} ms")
    results = {}
    for label, words in (
        ("a word in ~200 lines", "batch4242"),
        ("a word in every line (first 100)", "processed"),
        ("two words, one in every line", "processed E7"),
    ):
        hits = len(searcher(words)())
        results[label] = median_ms(searcher(words), runs)
        print(
            f"{label:34} {results[label]:8.2f} ms  ({results[label] / floor_ms:5.1f}x floor, "
            f"{hits} hits)"
        )
    db.close()
    return results["a word in ~200 lines"]


if __name__ == "__main__":
    sys.exit(main())
