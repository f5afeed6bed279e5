"""The public views on small data with known answers, read through the read-only connection."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect

from scheduler import query
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Finish, NewExecution, PhaseState, Status, Trigger
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.store.workflows import PhaseRow, replace_file

T0 = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)


@pytest.fixture
def ro(db: Database) -> Iterator[ReadOnlyDatabase]:
    reader = ReadOnlyDatabase(db.url)
    yield reader
    reader.close()


def add_phases(db: Database, file_path: str, phases: list[tuple[str, str, str]]) -> None:
    """Store (task, depends_on, rule) phases of one file, as a refresh would."""
    rows = [PhaseRow(file_path, t, d, r, "", 0, "", "ok") for t, d, r in phases]
    with db.write() as conn:
        replace_file(conn, file_path, "0" * 32, T0, rows, T0)


def add_run(db: Database, task: str, status: Status, seconds: float, at: datetime,
            msg: str = "", file_path: str = "etl.toml") -> int:
    """One execution of ``task`` created at ``at`` that ran ``seconds`` and ended ``status``."""
    row = NewExecution(task_id="c", file_path=file_path, task=task, task_time=at,
                       trigger=Trigger.CRON, info="", meta={}, not_before=at)
    with db.write() as conn:
        history.insert_executions(conn, [row], at)
        new_id = int(conn.exec_driver_sql("SELECT MAX(id) FROM executions").scalar_one())
        if status not in (Status.QUEUED, Status.RUNNING):
            history.record_finishes(conn, [Finish(new_id, status, msg, 0, at,
                                                  at + timedelta(seconds=seconds))])
        elif status is Status.RUNNING:
            history.mark_running(conn, [new_id], at)
    return new_id


def stats_of(ro: ReadOnlyDatabase, task: str) -> dict[str, object]:
    rows = ro.query("SELECT * FROM execution_stats WHERE task = :t", {"t": task}).as_dicts()
    assert len(rows) == 1
    return rows[0]


def test_execution_stats_counts_rates_and_durations(db: Database, ro: ReadOnlyDatabase) -> None:
    # given twenty runs of 1..20 seconds, the 5th and 9th failed, plus a skipped and a queued row
    for n in range(1, 21):
        status = Status.ERROR if n in (5, 9) else Status.COMPLETE
        add_run(db, "load", status, n, T0 + timedelta(hours=n), msg=f"exit {n}")
    add_run(db, "load", Status.SKIPPED, 0, T0 + timedelta(hours=30))
    add_run(db, "load", Status.QUEUED, 0, T0 + timedelta(hours=31))
    # when
    stats = stats_of(ro, "load")
    # then: queued is not a run; skipped counts as a run but has no duration
    assert (stats["runs"], stats["complete"], stats["error"], stats["skipped"]) == (21, 18, 2, 1)
    assert stats["success_rate"] == 90.0
    assert stats["avg_seconds"] == pytest.approx(10.5, abs=1e-3)
    assert stats["p95_seconds"] == pytest.approx(19, abs=1e-3)  # ceil(0.95 * 20) = 19th
    assert stats["max_seconds"] == pytest.approx(20, abs=1e-3)
    assert stats["last_failure_msg"] == "exit 9"
    assert stats["last_failure_at"] == "2024-01-02T12:00:09.000000Z"


@pytest.mark.parametrize(
    ("durations", "p95"),
    [
        ([7], 7),                       # one run: its own duration
        ([1, 2], 2),                    # ceil(1.9) = 2nd
        (list(range(1, 101)), 95),      # ceil(95) = 95th
        (list(range(100, 0, -1)), 95),  # insertion order does not matter
        ([3, 3, 3, 50], 50),            # ceil(3.8) = 4th
    ],
)
def test_p95_is_the_nearest_rank(db: Database, ro: ReadOnlyDatabase, durations: list[int],
                                 p95: int) -> None:
    for n, seconds in enumerate(durations):
        add_run(db, "x", Status.COMPLETE, seconds, T0 + timedelta(minutes=n))
    assert stats_of(ro, "x")["p95_seconds"] == pytest.approx(p95, abs=1e-3)


def test_stats_since_counts_only_newer_executions(db: Database, ro: ReadOnlyDatabase) -> None:
    add_run(db, "load", Status.ERROR, 100, T0, msg="old failure")
    add_run(db, "load", Status.COMPLETE, 4, T0 + timedelta(days=2))
    add_run(db, "load", Status.COMPLETE, 6, T0 + timedelta(days=3))
    rows = query.stats(ro, since=T0 + timedelta(days=1))
    assert len(rows) == 1
    assert (rows[0]["runs"], rows[0]["error"], rows[0]["success_rate"]) == (2, 0, 100.0)
    assert rows[0]["max_seconds"] == pytest.approx(6, abs=1e-3)
    assert rows[0]["last_failure_id"] is None


def test_phase_status_shows_last_execution_pause_and_next_fire(db: Database,
                                                               ro: ReadOnlyDatabase) -> None:
    # given two phases; only "load" ran (twice) and has a schedule, and it is paused
    add_phases(db, "etl.toml", [("load", "", "cron=0 5 * * *"), ("report", "load", "")])
    add_run(db, "load", Status.ERROR, 3, T0, msg="boom")
    last = add_run(db, "load", Status.COMPLETE, 5, T0 + timedelta(days=1))
    next_fire = T0 + timedelta(days=2)
    with db.write() as conn:
        history.save_phase_states(conn, [PhaseState("etl.toml", "load", T0, T0, "0 5 * * *",
                                                    next_fire, False)])
        conn.exec_driver_sql("UPDATE phase_state SET paused = 1 WHERE task = 'load'")
    # when
    rows = {r["task"]: r for r in ro.query("SELECT * FROM phase_status").as_dicts()}
    # then
    assert rows["load"]["last_execution_id"] == last
    assert rows["load"]["last_status"] == "complete"
    assert rows["load"]["last_started_at"] == "2024-01-03T03:00:00.000000Z"
    assert rows["load"]["last_ended_at"] == "2024-01-03T03:00:05.000000Z"
    assert rows["load"]["paused"] == 1
    assert rows["load"]["next_fire"] == "2024-01-04T03:00:00.000000Z"
    assert rows["report"]["last_execution_id"] is None
    assert rows["report"]["paused"] == 0
    assert rows["report"]["depends_on"] == "load"


def test_task_relationships_match_topic_and_topic_job(db: Database,
                                                      ro: ReadOnlyDatabase) -> None:
    add_phases(db, "a.toml", [
        ("load:daily", "", "cron=0 5 * * *"), ("load:hourly", "", "cron=0 * * * *"),
        ("clean", "load", ""), ("report", "load:daily", ""),
    ])
    add_phases(db, "b.toml", [("load:daily", "", "cron=0 5 * * *")])
    rows = ro.query("SELECT parent_task, child_task, file_path FROM task_relationships"
                    " ORDER BY child_task, parent_task").rows
    assert rows == [
        ("load:daily", "clean", "a.toml"), ("load:hourly", "clean", "a.toml"),
        ("load:daily", "report", "a.toml"),
    ]


def test_list_executions_filters_and_pages(db: Database, ro: ReadOnlyDatabase) -> None:
    ids = [add_run(db, "load", Status.COMPLETE if n % 2 else Status.ERROR, 1,
                   T0 + timedelta(hours=n)) for n in range(5)]
    where = query.ExecutionFilter(task="load", status="error")
    first = query.list_executions(ro, where, limit=2)
    second = query.list_executions(ro, where, limit=2, offset=2)
    assert [r["id"] for r in first.rows] == [ids[4], ids[2]]
    assert first.next_offset == 2
    assert [r["id"] for r in second.rows] == [ids[0]]
    assert second.next_offset is None
    assert first.rows[0]["seconds"] == pytest.approx(1, abs=1e-3)


def test_views_exist_after_migration(db: Database) -> None:
    with db.read() as conn:
        found = inspect(conn)
        names = set(found.get_view_names())
        indexes = {index["name"] for index in found.get_indexes("executions")}
    assert names == {"phase_status", "task_relationships", "execution_stats"}
    assert {"ix_executions_phase_id", "ix_executions_phase_duration"} <= indexes
