"""Retention: ``store.retention.prune`` on a real SQLite database."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, func, select

from scheduler.catalog import Catalog
from scheduler.store import file_reports, history, retention, watched
from scheduler.store.db import Database
from scheduler.store.file_reports import FileReport, Source
from scheduler.store.history import LogRow, NewAlert, NewExecution, Status, Trigger
from scheduler.store.retention import PruneCounts
from scheduler.store.schema import alerts, execution_logs, executions, phase_state, workflow_phases
from scheduler.store.schema import file_reports as file_reports_table
from scheduler.tasktime import iso
from scheduler.watcher import Diff, Entry, WatchState
from tests.conftest import WriteWorkflow

NOW = datetime(2024, 6, 1, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=90)
OLD = CUTOFF - timedelta(days=1)
RECENT = CUTOFF + timedelta(days=1)


def add(
    db: Database,
    at: datetime,
    status: Status = Status.COMPLETE,
    logs: int = 0,
    alert: bool = False,
) -> int:
    """One execution created (and, when finished, ended) at ``at``; returns its id."""
    row = NewExecution("chain", "w.toml", "t", at, Trigger.CRON, "true", {}, at, status=status)
    with db.write() as conn:
        history.insert_executions(conn, [row], at)
        eid = int(conn.scalar(select(func.max(executions.c.id))) or 0)
        history.insert_logs(conn, [LogRow(eid, n, at, "stdout", f"line {n}") for n in range(logs)])
        if alert:
            history.insert_alerts(
                conn, [NewAlert(eid, "chain", "w.toml", "t", at, "failed", "")], at
            )
    return eid


def stray_alert(db: Database, at: datetime) -> None:
    with db.write() as conn:
        history.insert_alerts(conn, [NewAlert(None, "", "w.toml", "t", at, "alert", "x")], at)


def ids(db: Database) -> list[int]:
    with db.read() as conn:
        return list(conn.scalars(select(executions.c.id).order_by(executions.c.id)))


def counts(db: Database) -> tuple[int, int, int]:
    with db.read() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for table in (executions, execution_logs, alerts)
        )


@pytest.fixture
def writes(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the write transactions the database opens from now on."""
    opened: list[int] = []
    real: Callable[[], AbstractContextManager[Connection]] = db.write

    def counting() -> AbstractContextManager[Connection]:
        opened.append(1)
        return real()

    monkeypatch.setattr(db, "write", counting)
    return opened


def test_old_finished_executions_go_with_their_logs_and_alerts(db: Database) -> None:
    # given old finished executions (one with logs and an alert), recent ones, and old ones
    # that are still queued or running
    old = [
        add(db, OLD, logs=3, alert=True),
        add(db, OLD, Status.ERROR),
        add(db, OLD, Status.SKIPPED),
    ]
    recent = add(db, RECENT, logs=2, alert=True)
    queued = add(db, OLD, Status.QUEUED)
    running = add(db, OLD, Status.RUNNING)
    # when pruned at the cutoff
    result = retention.prune(db, CUTOFF)
    # then exactly the old finished ones are gone, with their 3 log lines and 1 alert
    assert result == PruneCounts(executions=3, logs=3, alerts=1)
    assert ids(db) == [recent, queued, running]
    assert counts(db) == (3, 2, 1)
    assert not set(old) & set(ids(db))


def test_prune_deletes_in_batches_of_at_most_batch_rows(db: Database, writes: list[int]) -> None:
    # given 5 old executions with 3 log lines and 1 alert each
    for _ in range(5):
        add(db, OLD, logs=3, alert=True)
    writes.clear()
    # when pruned 2 rows at a time
    result = retention.prune(db, CUTOFF, batch=2)
    # then everything went, in at least ceil(15/2) + ceil(5/2) + ceil(5/2) transactions
    assert result == PruneCounts(executions=5, logs=15, alerts=5)
    assert counts(db) == (0, 0, 0)
    assert len(writes) >= 8 + 3 + 3


def test_nothing_to_delete_opens_no_write_transaction(db: Database, writes: list[int]) -> None:
    add(db, RECENT, logs=2, alert=True)
    add(db, OLD, Status.QUEUED)
    writes.clear()
    assert retention.prune(db, CUTOFF) == PruneCounts()
    assert writes == []
    assert counts(db) == (2, 2, 1)


@pytest.mark.parametrize(
    ("created", "ended", "pruned"),
    [
        (OLD, OLD, True),
        (OLD, CUTOFF - timedelta(microseconds=1), True),
        (OLD, CUTOFF, False),  # strictly before the cutoff
        (OLD, RECENT, False),  # queued long ago, but ended recently
        (RECENT, RECENT, False),
    ],
)
def test_the_cutoff_applies_to_the_end_time(
    db: Database, created: datetime, ended: datetime, pruned: bool
) -> None:
    eid = add(db, created, Status.QUEUED)
    with db.write() as conn:
        history.record_finishes(conn, [history.Finish(eid, Status.COMPLETE, "", 0, created, ended)])
    assert retention.prune(db, CUTOFF).executions == int(pruned)
    assert ids(db) == ([] if pruned else [eid])


def test_alerts_of_no_execution_go_by_their_own_age(db: Database) -> None:
    stray_alert(db, OLD)
    stray_alert(db, RECENT)
    assert retention.prune(db, CUTOFF) == PruneCounts(alerts=1)
    assert counts(db) == (0, 0, 1)


def test_count_predicts_prune(db: Database) -> None:
    add(db, OLD, logs=4, alert=True)
    add(db, OLD, logs=1)
    add(db, RECENT, logs=7, alert=True)
    stray_alert(db, OLD)
    predicted = retention.count(db, CUTOFF)
    assert predicted == PruneCounts(executions=2, logs=5, alerts=2)
    assert counts(db) == (3, 12, 3)  # counting deleted nothing
    assert retention.prune(db, CUTOFF, batch=3) == predicted


def test_workflow_tables_and_phase_state_are_never_touched(
    db: Database, catalog: Catalog, write_workflow: WriteWorkflow
) -> None:
    write_workflow("w.toml", '[[phase]]\ntask = "t"\nrule = "cron=@daily"\n')
    catalog.refresh()
    state = history.PhaseState("w.toml", "t", OLD, OLD, "@daily|UTC", None, False)
    with db.write() as conn:
        history.save_phase_states(conn, [state])
    add(db, OLD, logs=1, alert=True)
    retention.prune(db, NOW)
    with db.read() as conn:
        assert conn.scalar(select(func.count()).select_from(workflow_phases)) == 1
        assert conn.scalar(select(func.count()).select_from(phase_state)) == 1
    assert counts(db) == (0, 0, 0)


def test_batch_must_be_positive(db: Database) -> None:
    with pytest.raises(ValueError, match="batch must be at least 1"):
        retention.prune(db, CUTOFF, batch=0)


# -- file reports -----------------------------------------------------------------------------


def report(db: Database, at: datetime, path: str = "/in/a.csv") -> None:
    with db.write() as conn:
        file_reports.record(conn, [FileReport(path, Source.WATCH, None, 0)], at)


def reported_at(db: Database) -> list[str]:
    with db.read() as conn:
        query = select(file_reports_table.c.reported_at).order_by(file_reports_table.c.id)
        return list(conn.scalars(query))


def test_old_file_reports_go_by_when_they_were_reported(db: Database) -> None:
    # given reports made before, at and after the cutoff, and no executions at all
    for at in (OLD, CUTOFF - timedelta(microseconds=1), CUTOFF, RECENT):
        report(db, at)
    # when counted, then pruned two per transaction
    assert retention.count(db, CUTOFF) == PruneCounts(file_reports=2)
    assert retention.prune(db, CUTOFF, batch=1) == PruneCounts(file_reports=2)
    # then the two made strictly before the cutoff are gone
    assert reported_at(db) == [iso(CUTOFF), iso(RECENT)]


def test_the_watched_folder_state_is_never_pruned(db: Database) -> None:
    # given the kept state of a watched folder (marked and with a file) from long ago
    with db.write() as conn:
        watched.save(conn, "/in", Diff({"/in/a.csv": Entry((1, 2), False)}, first=True), OLD)
    report(db, OLD)
    # when everything before now is pruned, then the report goes and the state stays
    assert retention.prune(db, NOW).file_reports == 1
    with db.read() as conn:
        assert watched.load(conn, "/in") == WatchState({"/in/a.csv": (1, 2)})


def test_only_recent_file_reports_open_no_write_transaction(
    db: Database, writes: list[int]
) -> None:
    report(db, RECENT)
    writes.clear()
    assert retention.prune(db, CUTOFF) == PruneCounts()
    assert writes == []
