"""Retention: deleting old executions with their log lines and alerts, and old file reports.
Workflow tables, phase state and the watched folder's state are never touched.

An execution is old when it ended before the cutoff; queued and running rows never are, however
old. Deletion runs in batches, each its own short write transaction, so a running scheduler waits
at most one batch for the database. Log lines go first, then alerts, then the executions
themselves, so an interrupted prune leaves nothing dangling and the next one finishes it. A file
report is old when it was reported before the cutoff.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    delete,
    exists,
    func,
    select,
    tuple_,
)

from scheduler.store.db import Database
from scheduler.store.history import Status
from scheduler.store.schema import alerts, execution_logs, executions, file_reports
from scheduler.tasktime import iso

DEFAULT_BATCH = 5_000
_ACTIVE = (Status.QUEUED.value, Status.RUNNING.value)


@dataclass(frozen=True)
class PruneCounts:
    executions: int = 0
    logs: int = 0
    alerts: int = 0
    file_reports: int = 0

    @property
    def total(self) -> int:
        return self.executions + self.logs + self.alerts + self.file_reports


def _old(cutoff: datetime) -> ColumnElement[bool]:
    """Executions that ended before ``cutoff``. The ``created_at`` bound (a row is created before
    it ends) lets the created_at index skip every recent row; ended_at has no index."""
    c, stamp = executions.c, iso(cutoff)
    return (c.created_at < stamp) & (c.ended_at < stamp) & c.status.not_in(_ACTIVE)


def _old_ids(cutoff: datetime) -> Select[Any]:
    return select(executions.c.id).where(_old(cutoff))


def _stray_alerts(cutoff: datetime) -> ColumnElement[bool]:
    """Alerts tied to no execution, older than ``cutoff``."""
    return alerts.c.execution_id.is_(None) & (alerts.c.created_at < iso(cutoff))


def _old_alerts(cutoff: datetime) -> ColumnElement[bool]:
    return alerts.c.execution_id.in_(_old_ids(cutoff)) | _stray_alerts(cutoff)


def _old_reports(cutoff: datetime) -> ColumnElement[bool]:
    return file_reports.c.reported_at < iso(cutoff)


def count(db: Database, cutoff: datetime) -> PruneCounts:
    """What ``prune`` would delete now (for a dry run)."""
    with db.read() as conn:
        old_logs = execution_logs.c.execution_id.in_(_old_ids(cutoff))
        tally = select(func.count())
        return PruneCounts(
            executions=_count(conn, tally.where(_old(cutoff))),
            logs=_count(conn, tally.select_from(execution_logs).where(old_logs)),
            alerts=_count(conn, tally.select_from(alerts).where(_old_alerts(cutoff))),
            file_reports=_count(conn, tally.select_from(file_reports).where(_old_reports(cutoff))),
        )


def _count(conn: Connection, query: Select[Any]) -> int:
    return int(conn.scalar(query) or 0)


def prune(
    db: Database,
    cutoff: datetime,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> PruneCounts:
    """Delete executions that ended before ``cutoff``, their log lines and their alerts (and
    alerts tied to no execution created before it), and file reports made before it, at most
    ``batch`` rows per transaction; ``progress`` hears how many rows each one deleted.

    Cheap when there is nothing to delete: one indexed read, no write transaction.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if not _anything_old(db, cutoff):
        return PruneCounts()
    tell = progress or (lambda _rows: None)
    logs = _drain(db, lambda conn: _delete_logs(conn, cutoff, batch), batch, tell)
    alert_count = _drain(db, lambda conn: _delete_alerts(conn, cutoff, batch), batch, tell)
    execution_count = _drain(db, lambda conn: _delete_executions(conn, cutoff, batch), batch, tell)
    report_count = _drain(db, lambda conn: _delete_reports(conn, cutoff, batch), batch, tell)
    return PruneCounts(execution_count, logs, alert_count, report_count)


def _anything_old(db: Database, cutoff: datetime) -> bool:
    with db.read() as conn:
        query = select(
            exists(_old_ids(cutoff))
            | exists().where(_stray_alerts(cutoff))
            | exists().where(_old_reports(cutoff))
        )
        return bool(conn.scalar(query))


def _drain(
    db: Database, step: Callable[[Connection], int], batch: int, tell: Callable[[int], None]
) -> int:
    """Run ``step`` in its own write transaction until a run deletes less than a batch."""
    total = 0
    while True:
        with db.write() as conn:
            deleted = step(conn)
        total += deleted
        tell(deleted)
        if deleted < batch:
            return total


def _delete_logs(conn: Connection, cutoff: datetime, batch: int) -> int:
    key = tuple_(execution_logs.c.execution_id, execution_logs.c.seq)
    chosen = (
        select(execution_logs.c.execution_id, execution_logs.c.seq)
        .where(execution_logs.c.execution_id.in_(_old_ids(cutoff)))
        .limit(batch)
    )
    return _rowcount(conn.execute(delete(execution_logs).where(key.in_(chosen))).rowcount)


def _delete_alerts(conn: Connection, cutoff: datetime, batch: int) -> int:
    return _delete_some(conn, alerts, _old_alerts(cutoff), batch)


def _delete_some(conn: Connection, table: Table, old: ColumnElement[bool], batch: int) -> int:
    """Delete at most ``batch`` rows of ``table`` (keyed by ``id``) that are ``old``."""
    ids = [row.id for row in conn.execute(select(table.c.id).where(old).limit(batch))]
    if ids:
        conn.execute(delete(table).where(table.c.id.in_(ids)))
    return len(ids)


def _delete_executions(conn: Connection, cutoff: datetime, batch: int) -> int:
    ids = [row.id for row in conn.execute(_old_ids(cutoff).order_by(executions.c.id).limit(batch))]
    if ids:
        # Nothing should be left of these; this keeps a row written meanwhile from dangling.
        conn.execute(delete(execution_logs).where(execution_logs.c.execution_id.in_(ids)))
        conn.execute(delete(alerts).where(alerts.c.execution_id.in_(ids)))
        conn.execute(delete(executions).where(executions.c.id.in_(ids)))
    return len(ids)


def _delete_reports(conn: Connection, cutoff: datetime, batch: int) -> int:
    return _delete_some(conn, file_reports, _old_reports(cutoff), batch)


def _rowcount(value: int | None) -> int:
    return max(int(value or 0), 0)
