"""How fast the public views answer at 1,000,000 executions (SQLite).

    python benchmarks/views.py [--rows 1000000] [--phases 1000] [--db PATH] [--keep]

Builds a database through the normal migrations, fills it with generated history in a few big
``INSERT ... SELECT`` statements (a recursive CTE, so a million rows take seconds), then times
each query on the read-only connection ``tomlflow sql`` uses and prints milliseconds (best of
several runs, after one warm-up). Exits 1 when a query misses its target.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scheduler.store.db import Database
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.store.views import execution_stats_select

FILES = 50
START = "2024-01-01 00:00:00"

# One phase per (file, index): the first of each file runs on cron, the rest depend on the one
# before, so task_relationships has real chains.
_PHASES = """
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :phases)
INSERT INTO workflow_phases (file_path, task, depends_on, rule, template, retry, status, severity)
SELECT 'file' || (i % :files) || '.toml', 'topic' || i || ':job',
       CASE WHEN i < :files THEN '' ELSE 'topic' || (i - :files) END,
       CASE WHEN i < :files THEN 'cron=0 * * * *' ELSE '' END,
       'run.sh {yyyy}-{mm}-{dd}', 2, '', 'ok'
FROM n
"""

_STATE = """
INSERT INTO phase_state (file_path, task, first_seen, evaluated_until, cron, next_fire, paused)
SELECT file_path, task, '2024-01-01T00:00:00.000000Z', '2024-03-01T00:00:00.000000Z',
       rule, '2024-03-01T01:00:00.000000Z', 0
FROM workflow_phases
"""

# Row i belongs to phase i % phases and to hour i / phases: every phase gets one execution an
# hour. Statuses: ~90 % complete, 6 % error, 2 % skipped, 1 % warn, 1 % alert.
_EXECUTIONS = """
WITH RECURSIVE n(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :hi),
     r AS (SELECT i, i % :phases AS p, i / :phases AS h, abs(random()) % 100 AS roll,
                  abs(random()) % 600 AS secs FROM n)
INSERT INTO executions (task_id, file_path, task, topic, job, task_time, attempt, trigger, status,
                        info, meta, msg, exit_code, created_at, started_at, ended_at, not_before,
                        duration_seconds)
SELECT printf('%08x', i), 'file' || (p % :files) || '.toml', 'topic' || p || ':job',
       'topic' || p, 'job', strftime('%Y-%m-%dT%H:00:00.000000Z', :start, '+' || h || ' hours'),
       1, 'cron',
       CASE WHEN roll < 90 THEN 'complete' WHEN roll < 96 THEN 'error'
            WHEN roll < 98 THEN 'skipped' WHEN roll < 99 THEN 'warn' ELSE 'alert' END,
       'run.sh', '{}', CASE WHEN roll BETWEEN 90 AND 95 THEN 'exit status 1' ELSE '' END,
       CASE WHEN roll BETWEEN 90 AND 95 THEN 1 ELSE 0 END,
       strftime('%Y-%m-%dT%H:00:00.000000Z', :start, '+' || h || ' hours'),
       strftime('%Y-%m-%dT%H:00:01.000000Z', :start, '+' || h || ' hours'),
       strftime('%Y-%m-%dT%H:%M:%S.000000Z', :start, '+' || h || ' hours', '+1 seconds',
                '+' || secs || ' seconds'),
       strftime('%Y-%m-%dT%H:00:00.000000Z', :start, '+' || h || ' hours'),
       secs
FROM r
"""


def build(path: Path, rows: int, phases: int) -> None:
    """Create the schema (all migrations) and fill it with ``rows`` executions."""
    Database(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    args = {"phases": phases, "files": FILES, "start": START}
    conn.execute("BEGIN")
    conn.execute(_PHASES, args)
    conn.execute(_STATE)
    conn.execute("COMMIT")
    step = 200_000
    for lo in range(0, rows, step):
        conn.execute("BEGIN")
        conn.execute(_EXECUTIONS, {**args, "lo": lo, "hi": min(lo + step, rows)})
        conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def timed(run: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time in milliseconds over ``repeat`` runs, after one warm-up run."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


# name: (SQL, parameters, target in ms at 1,000,000 rows).
QUERIES: dict[str, tuple[str, dict[str, str], float]] = {
    "SELECT * FROM phase_status": ("SELECT * FROM phase_status", {}, 50),
    "SELECT * FROM execution_stats": ("SELECT * FROM execution_stats", {}, 100),
    # tomlflow stats --since 7d: counted from the executions of the last week, not the summary.
    "execution_stats of the last 7 days": (
        f"SELECT * FROM ({execution_stats_select('since')}) s",
        {"since": "2024-02-04T16:00:00.000000Z"},
        1000,
    ),
    "execution_stats WHERE task=?": (
        "SELECT * FROM execution_stats WHERE task = :task",
        {"task": "topic500:job"},
        50,
    ),
    "history WHERE task=? (newest 50)": (
        "SELECT * FROM executions WHERE task = :task ORDER BY created_at DESC LIMIT 50",
        {"task": "topic500:job"},
        10,
    ),
    "SELECT * FROM task_relationships": ("SELECT * FROM task_relationships", {}, 50),
    "children of one task": (
        "SELECT * FROM task_relationships WHERE parent_task = :task",
        {"task": "topic500:job"},
        10,
    ),
    "failures since a time, newest first": (
        "SELECT id, task, msg FROM executions WHERE status IN ('error', 'alert')"
        " AND created_at >= :since ORDER BY created_at DESC",
        {"since": "2024-02-10T00:00:00.000000Z"},
        200,
    ),
    "running for over an hour": (
        "SELECT id, task FROM executions WHERE status = 'running' AND started_at < :cutoff",
        {"cutoff": "2024-02-10T00:00:00.000000Z"},
        10,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--phases", type=int, default=1_000)
    parser.add_argument("--db", type=Path, help="Where to build it (default: a temp folder).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.db or Path(scratch) / "bench.db"
        start = time.perf_counter()
        build(path, args.rows, args.phases)
        print(
            f"built {args.rows:,} executions over {args.phases:,} phases "
            f"in {time.perf_counter() - start:.1f}s ({path.stat().st_size / 1e6:.0f} MB)"
        )
        ro = ReadOnlyDatabase(f"sqlite:///{path}", timeout_s=120)
        missed = [name for name, query in QUERIES.items() if not report(ro, name, *query)]
        ro.close()
    if missed:
        print(f"missed targets: {', '.join(missed)}")
        sys.exit(1)


def report(
    ro: ReadOnlyDatabase, name: str, sql: str, params: dict[str, str], target_ms: float
) -> bool:
    """Time one query, print a line, and say whether it met its target."""
    rows = len(ro.query(sql, params, max_rows=10_000).rows)
    ms = timed(lambda: ro.query(sql, params, max_rows=10_000))
    verdict = "ok" if ms <= target_ms else "MISSED"
    print(f"{ms:10.1f} ms  (target {target_ms:6.0f})  {verdict:6}  {rows:6,} rows  {name}")
    return ms <= target_ms


if __name__ == "__main__":
    main()
