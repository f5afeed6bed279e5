"""phase_stats stays equal to a GROUP BY over executions, whatever writes them, and databases
made before it get it (and executions.duration_seconds) filled in by the migration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from scheduler import query
from scheduler.store import history, retention
from scheduler.store.db import MIGRATIONS, Database
from scheduler.store.history import Finish, NewExecution, Status, Trigger
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.store.reruns import queue_rerun

T0 = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)

# What phase_stats must hold, computed the slow way (SQL that SQLite and PostgreSQL both run).
_STATUSES = ("complete", "error", "alert", "warn", "skipped", "cancelled")
_TIMED = "status IN ('complete', 'error', 'warn', 'alert') AND duration_seconds IS NOT NULL"
EXPECTED = f"""
SELECT file_path, task, COUNT(*) AS runs,
       {", ".join(f"SUM(CASE WHEN status = '{x}' THEN 1 ELSE 0 END)" for x in _STATUSES)},
       SUM(CASE WHEN {_TIMED} THEN 1 ELSE 0 END) AS timed,
       SUM(CASE WHEN {_TIMED} THEN CAST(ROUND(duration_seconds * 1000000) AS BIGINT) ELSE 0 END)
           AS total_microseconds
FROM executions WHERE status NOT IN ('queued', 'running')
GROUP BY file_path, task ORDER BY file_path, task
"""
STORED = """
SELECT file_path, task, runs, complete, error, alert, warn, skipped, cancelled, timed,
       total_microseconds
FROM phase_stats WHERE runs > 0 ORDER BY file_path, task
"""

EMPTIED_BUT_NOT_ZERO = """
SELECT COUNT(*) FROM phase_stats WHERE runs = 0
   AND complete + error + alert + warn + skipped + cancelled + timed + total_microseconds <> 0
"""


def summary(db: Database) -> list[tuple[object, ...]]:
    """phase_stats as stored, after checking it equals the GROUP BY it stands for."""
    with db.read() as conn:
        expected = [tuple(r) for r in conn.execute(text(EXPECTED))]
        stored = [tuple(r) for r in conn.execute(text(STORED))]
        # a phase whose runs were all deleted keeps a row, of zeros
        leftover = conn.execute(text(EMPTIED_BUT_NOT_ZERO)).scalar()
    assert stored == expected
    assert leftover == 0
    return stored


def new_row(task: str, status: Status = Status.QUEUED, at: datetime = T0) -> NewExecution:
    return NewExecution(
        task_id=f"chain-{task}",
        file_path="etl.toml",
        task=task,
        task_time=at,
        trigger=Trigger.CRON,
        info="",
        meta={},
        not_before=at,
        status=status,
    )


def insert(db: Database, row: NewExecution, at: datetime = T0) -> int:
    with db.write() as conn:
        history.insert_executions(conn, [row], at)
        return int(conn.execute(text("SELECT MAX(id) FROM executions")).scalar_one())


def finish(db: Database, eid: int, status: Status, seconds: float, at: datetime = T0) -> None:
    with db.write() as conn:
        history.record_finishes(
            conn, [Finish(eid, status, "", 0, at, at + timedelta(seconds=seconds))]
        )


def test_queued_and_running_rows_are_not_counted(db: Database) -> None:
    # given a queued row and a running one, then no phase has a run
    insert(db, new_row("load"))
    with db.write() as conn:
        history.insert_claimed(conn, [new_row("load")], T0)
    assert summary(db) == []


@pytest.mark.parametrize(
    ("status", "seconds", "counts"),
    [
        # (runs, complete, error, alert, warn, skipped, cancelled, timed, microseconds)
        (Status.COMPLETE, 1.5, (1, 1, 0, 0, 0, 0, 0, 1, 1_500_000)),
        (Status.ERROR, 0.000001, (1, 0, 1, 0, 0, 0, 0, 1, 1)),
        (Status.ALERT, 2, (1, 0, 0, 1, 0, 0, 0, 1, 2_000_000)),
        (Status.WARN, 3, (1, 0, 0, 0, 1, 0, 0, 1, 3_000_000)),
        (Status.SKIPPED, 4, (1, 0, 0, 0, 0, 1, 0, 0, 0)),  # skipped: no command, not timed
    ],
)
def test_a_finish_adds_one_run_to_its_phase(
    db: Database, status: Status, seconds: float, counts: tuple[int, ...]
) -> None:
    eid = insert(db, new_row("load"))
    with db.write() as conn:
        history.mark_running(conn, [eid], T0)
    finish(db, eid, status, seconds)
    assert summary(db) == [("etl.toml", "load", *counts)]


def test_rows_inserted_finished_are_counted_with_zero_run_time(db: Database) -> None:
    # given rows the planner inserts already ended (a skip, an error before starting)
    insert(db, new_row("load", Status.SKIPPED))
    insert(db, new_row("load", Status.ERROR))
    # then both count, and the error is timed at zero seconds
    assert summary(db) == [("etl.toml", "load", 2, 0, 1, 0, 0, 1, 0, 1, 0)]


def test_rerun_with_downstream_counts_the_cancelled_children(db: Database) -> None:
    # given a failed root whose child is still queued
    root = insert(db, new_row("root"))
    finish(db, root, Status.ERROR, 5)
    insert(db, replace(new_row("child"), task_id="chain-root", parent_execution_id=root))
    # when the root is rerun with --downstream
    with db.write() as conn:
        rerun = queue_rerun(conn, root, downstream=True, now=T0 + timedelta(hours=1))
    # then the cancelled child is a run without a duration; the queued rerun is no run yet
    assert len(rerun.cancelled) == 1
    assert summary(db) == [
        ("etl.toml", "child", 1, 0, 0, 0, 0, 0, 1, 0, 0),
        ("etl.toml", "root", 1, 0, 1, 0, 0, 0, 0, 1, 5_000_000),
    ]
    # and when the rerun completes, the root phase has two runs
    finish(db, rerun.execution_id, Status.COMPLETE, 2)
    assert summary(db)[1] == ("etl.toml", "root", 2, 1, 1, 0, 0, 0, 0, 2, 7_000_000)


def test_prune_takes_deleted_runs_out(db: Database) -> None:
    # given three old finished runs, one recent, and one old row still queued
    for n, status in enumerate([Status.COMPLETE, Status.ERROR, Status.COMPLETE]):
        finish(db, insert(db, new_row("load")), status, n + 1)
    with db.write() as conn:
        conn.execute(text("UPDATE executions SET created_at = '2000-01-01T00:00:00.000000Z'"))
    recent = insert(db, new_row("load"), T0 + timedelta(days=30))
    finish(db, recent, Status.WARN, 10, T0 + timedelta(days=30))
    insert(db, new_row("load"))
    # when everything that ended before the recent run is pruned, two per batch
    retention.prune(db, T0 + timedelta(days=1), batch=2)
    # then only the recent run is counted
    assert summary(db) == [("etl.toml", "load", 1, 0, 0, 0, 1, 0, 0, 1, 10_000_000)]


def test_pruning_every_run_leaves_no_phase_in_execution_stats(db: Database) -> None:
    finish(db, insert(db, new_row("load")), Status.COMPLETE, 1)
    retention.prune(db, T0 + timedelta(days=1))
    assert summary(db) == []
    reader = ReadOnlyDatabase(db.url)
    try:
        assert reader.query("SELECT * FROM execution_stats").rows == []
    finally:
        reader.close()


def test_direct_sql_writes_keep_it_right_too(db: Database) -> None:
    # given runs of two phases, then writes no tomlflow code makes: a status and a duration
    # changed by hand, a row moved to another phase, a row deleted
    ids = [insert(db, new_row(task)) for task in ("a", "a", "b")]
    for eid in ids:
        finish(db, eid, Status.COMPLETE, 3)
    with db.write() as conn:
        conn.execute(text(f"UPDATE executions SET status = 'error' WHERE id = {ids[0]}"))
        conn.execute(text(f"UPDATE executions SET duration_seconds = 9.25 WHERE id = {ids[1]}"))
        conn.execute(text(f"UPDATE executions SET task = 'b' WHERE id = {ids[1]}"))
        conn.execute(text(f"UPDATE executions SET status = 'running' WHERE id = {ids[2]}"))
        conn.execute(text(f"DELETE FROM executions WHERE id = {ids[0]}"))
    assert summary(db) == [("etl.toml", "b", 1, 1, 0, 0, 0, 0, 0, 1, 9_250_000)]


def test_duration_is_stored_with_the_end(db: Database) -> None:
    eid = insert(db, new_row("load"))
    finish(db, eid, Status.COMPLETE, 1.25)
    with db.read() as conn:
        stored = conn.execute(
            text(f"SELECT duration_seconds FROM executions WHERE id = {eid}")
        ).scalar_one()
    assert stored == 1.25


def test_stats_since_before_everything_equal_the_view(db: Database) -> None:
    # given a mix of phases, statuses and durations
    for n in range(30):
        task = ("load", "report", "clean")[n % 3]
        status = (Status.COMPLETE, Status.ERROR, Status.SKIPPED, Status.ALERT, Status.WARN)[n % 5]
        at = T0 + timedelta(minutes=n)
        eid = insert(db, new_row(task), at)
        finish(db, eid, status, (n * 7) % 11 + 0.5, at)
    insert(db, new_row("load"))
    # when counted from the summary (the view) and from the executions (--since)
    reader = ReadOnlyDatabase(db.url)
    try:
        from_view = query.stats(reader)
        from_rows = query.stats(reader, since=T0 - timedelta(days=1))
    finally:
        reader.close()
    # then they agree on every column
    assert len(from_view) == 3
    for view_row, rows_row in zip(from_view, from_rows, strict=True):
        assert view_row.keys() == rows_row.keys()
        for column, value in view_row.items():
            assert rows_row[column] == (pytest.approx(value) if isinstance(value, float) else value)


# -- databases made before schema version 5 -------------------------------------------------


@pytest.fixture
def version_4(tmp_path: Path) -> Iterator[str]:
    """A database at schema version 4 as that version made it: executions without
    duration_seconds, the old expression index, no phase_stats. Holds finished runs."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db = Database(url, migrate=False)
    db.migrate()
    with db.write() as conn:
        for statement in (
            "DROP VIEW execution_stats",
            *(f"DROP TRIGGER {n}" for n in _trigger_names(conn)),
            "DROP TABLE phase_stats",
            "DROP INDEX ix_executions_phase_duration",
            "DROP INDEX ix_executions_phase_failure",
            "ALTER TABLE executions DROP COLUMN duration_seconds",
            "CREATE INDEX ix_executions_phase_duration ON executions (file_path, task, "
            "((julianday(ended_at) - julianday(started_at)) * 86400.0), status)",
            "DELETE FROM schema_version WHERE version > 4",
        ):
            conn.execute(text(statement))
        conn.execute(text(OLD_ROWS))
    db.close()
    yield url


def _trigger_names(conn: object) -> list[str]:
    rows = conn.execute(  # type: ignore[attr-defined]
        text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    )
    return [r[0] for r in rows]


# Three runs of "load" (0.5 s, 2.000001 s, a skip) and a queued one, written as version 4 did.
OLD_ROWS = """
INSERT INTO executions (task_id, file_path, task, topic, trigger, status, created_at,
                        started_at, ended_at, not_before)
VALUES ('c', 'etl.toml', 'load', 'load', 'cron', 'complete', '2024-01-01T00:00:00.000000Z',
        '2024-01-01T00:00:00.750000Z', '2024-01-01T00:00:01.250000Z',
        '2024-01-01T00:00:00.000000Z'),
       ('c', 'etl.toml', 'load', 'load', 'cron', 'error', '2024-01-01T01:00:00.000000Z',
        '2024-01-01T01:00:59.999999Z', '2024-01-01T01:01:02.000000Z',
        '2024-01-01T01:00:00.000000Z'),
       ('c', 'etl.toml', 'load', 'load', 'cron', 'skipped', '2024-01-01T02:00:00.000000Z',
        '2024-01-01T02:00:00.000000Z', '2024-01-01T02:00:00.000000Z',
        '2024-01-01T02:00:00.000000Z'),
       ('c', 'etl.toml', 'load', 'load', 'cron', 'queued', '2024-01-01T03:00:00.000000Z',
        NULL, NULL, '2024-01-01T03:00:00.000000Z')
"""


def test_migration_backfills_durations_and_summary(version_4: str) -> None:
    # when a version 4 database is opened
    db = Database(version_4)
    try:
        # then durations are exact to the microsecond, and the summary matches the rows
        with db.read() as conn:
            durations = conn.execute(
                text("SELECT status, duration_seconds FROM executions ORDER BY id")
            ).all()
            index_sql = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_executions_phase_duration'")
            ).scalar_one()
        assert db.version() == len(MIGRATIONS)
        assert [tuple(r) for r in durations] == [
            ("complete", 0.5),
            ("error", pytest.approx(2.000001, abs=1e-9)),
            ("skipped", 0.0),
            ("queued", None),
        ]
        assert "julianday" not in index_sql and "duration_seconds" in index_sql
        assert summary(db) == [("etl.toml", "load", 3, 1, 1, 0, 0, 1, 0, 2, 2_500_001)]
        # and a run recorded after the migration is counted too
        finish(db, insert(db, new_row("load")), Status.COMPLETE, 1)
        assert summary(db)[0][2] == 4
    finally:
        db.close()
