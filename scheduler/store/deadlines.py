"""Reads and writes for deadlines (rule key ``sla``): how far each phase was checked, when its
runs completed, and the missed-deadline alerts.

An alert of kind ``sla`` exists once per phase and task time: a partial unique index on
``alerts`` makes a second insert (a restart, two checks racing) do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from scheduler.store.alerting import AlertKind
from scheduler.store.history import NewAlert, Status
from scheduler.store.schema import alerts, executions, sla_checks
from scheduler.tasktime import from_iso, iso

KIND = AlertKind.SLA.value
_UNIQUE = "uq_alerts_sla"
_WHERE = f"kind = '{KIND}'"
PhaseKey = tuple[str, str]


def create(conn: Connection) -> None:
    """Migration step: the check table and the one-alert-per-task-time key."""
    sla_checks.create(conn, checkfirst=True)
    conn.exec_driver_sql(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {_UNIQUE} ON alerts (file_path, task, task_time) "
        f"WHERE {_WHERE}"
    )


def checked(conn: Connection) -> dict[PhaseKey, datetime]:
    """Each phase's ``checked_until``: deadlines up to it have been judged."""
    return {
        (r.file_path, r.task): from_iso(r.checked_until) for r in conn.execute(select(sla_checks))
    }


def completions(
    conn: Connection, file_path: str, task: str, task_times: Sequence[datetime]
) -> dict[datetime, datetime]:
    """For each of ``task_times`` that has a complete execution of this phase: the earliest
    ``ended_at`` of one."""
    if not task_times:
        return {}
    c = executions.c
    query = (
        select(c.task_time, func.min(c.ended_at))
        .where(
            c.file_path == file_path,
            c.task == task,
            c.status == Status.COMPLETE.value,
            c.task_time.in_([iso(t) for t in task_times]),
            c.ended_at.is_not(None),
        )
        .group_by(c.task_time)
    )
    return {from_iso(t): from_iso(ended) for t, ended in conn.execute(query)}


def record(
    conn: Connection, missed: Sequence[NewAlert], until: Mapping[PhaseKey, datetime], now: datetime
) -> int:
    """Insert the missed-deadline alerts not recorded before and move each phase's
    ``checked_until``; returns how many alerts were new."""
    new = 0
    if missed:
        rows = [_alert_values(a, now) for a in missed]
        new = len(conn.execute(_insert_once(conn).returning(alerts.c.id), rows).all())
    _save_checked(conn, until)
    return new


def _alert_values(alert: NewAlert, now: datetime) -> dict[str, Any]:
    return {
        "execution_id": alert.execution_id,
        "task_id": alert.task_id,
        "file_path": alert.file_path,
        "task": alert.task,
        "task_time": iso(alert.task_time) if alert.task_time else None,
        "kind": KIND,
        "msg": alert.msg,
        "created_at": iso(now),
    }


def _insert_once(conn: Connection) -> Any:
    dialect = {"sqlite": sqlite, "postgresql": postgresql}[conn.dialect.name]
    return dialect.insert(alerts).on_conflict_do_nothing(
        index_elements=["file_path", "task", "task_time"],
        index_where=text(_WHERE),
    )


def _save_checked(conn: Connection, until: Mapping[PhaseKey, datetime]) -> None:
    stored = set(checked(conn)) if until else set()
    for (file_path, task), moment in until.items():
        where = (sla_checks.c.file_path == file_path) & (sla_checks.c.task == task)
        if (file_path, task) in stored:
            conn.execute(update(sla_checks).where(where).values(checked_until=iso(moment)))
        else:
            conn.execute(
                insert(sla_checks).values(file_path=file_path, task=task, checked_until=iso(moment))
            )


def sla_alerts(conn: Connection) -> list[tuple[str, str, datetime | None, str]]:
    """(file_path, task, task_time, msg) of every missed-deadline alert, oldest first."""
    query = select(alerts.c.file_path, alerts.c.task, alerts.c.task_time, alerts.c.msg).where(
        alerts.c.kind == KIND
    )
    return [
        (r.file_path, r.task, from_iso(r.task_time) if r.task_time else None, r.msg)
        for r in conn.execute(query.order_by(alerts.c.id))
    ]
