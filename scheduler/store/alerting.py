"""Reads and writes of alert notification state: which ``alerts`` rows are not yet posted.

A row is unsent while ``notified_at`` is NULL. The notifier reads unsent rows, posts them
outside any transaction, and only then marks them, so a crash between the two sends a row twice
rather than never.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, bindparam, select, update

from scheduler.store.schema import alerts
from scheduler.tasktime import from_iso, iso


class AlertKind(StrEnum):
    """The ``alerts.kind`` values."""

    FAILED = "failed"  # retries exhausted
    ALERT = "alert"  # an execution reported result ``alert``
    SLA = "sla"  # a scheduled time's run missed its deadline (sla.py)


@dataclass(frozen=True)
class PendingAlert:
    """An ``alerts`` row not yet posted."""

    id: int
    execution_id: int | None
    task_id: str
    file_path: str
    task: str
    task_time: datetime | None
    kind: str
    msg: str
    created_at: datetime


_UNSENT = (
    select(alerts)
    .where(alerts.c.notified_at.is_(None))
    .order_by(alerts.c.id)
    .limit(bindparam("limit_"))
)
_MARK = (
    update(alerts)
    .where(alerts.c.id == bindparam("aid"), alerts.c.notified_at.is_(None))
    .values(notified_at=bindparam("at"))
)


def unsent(conn: Connection, limit: int) -> list[PendingAlert]:
    """Up to ``limit`` alerts whose ``notified_at`` is NULL, oldest first."""
    return [
        PendingAlert(
            id=r.id,
            execution_id=r.execution_id,
            task_id=r.task_id,
            file_path=r.file_path,
            task=r.task,
            task_time=from_iso(r.task_time) if r.task_time else None,
            kind=r.kind,
            msg=r.msg,
            created_at=from_iso(r.created_at),
        )
        for r in conn.execute(_UNSENT, {"limit_": limit})
    ]


def mark_notified(conn: Connection, ids: Iterable[int], now: datetime) -> None:
    """Set ``notified_at = now`` on these alerts (ones already marked keep their time)."""
    at = iso(now)
    params = [{"aid": i, "at": at} for i in ids]
    if params:
        conn.execute(_MARK, params)
