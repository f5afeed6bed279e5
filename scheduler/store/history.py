"""Reads and writes of executions, their logs, alerts, and per-phase scheduling state.

Functions take an open connection; the engine groups them into one short transaction per step
(enqueue, claim, record), so a result and the children or retry it releases commit together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from scheduler.store.dbapi import Statement, ValuesStatement
from scheduler.store.schema import (
    alerts,
    cancel_requests,
    execution_logs,
    executions,
    phase_state,
)
from scheduler.tasktime import from_iso, iso


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    WARN = "warn"
    ALERT = "alert"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


USER_CANCEL = "cancelled by user"
"""The msg of an execution a user cancelled: unlike a shutdown's cancel, nothing follows it."""

FINISHED = frozenset(
    {Status.COMPLETE, Status.ERROR, Status.WARN, Status.ALERT, Status.SKIPPED, Status.CANCELLED}
)


class Trigger(StrEnum):
    CRON = "cron"
    DEPENDENCY = "dependency"
    MANUAL = "manual"
    BACKFILL = "backfill"
    RETRY = "retry"
    FILE = "file"


_TRIGGERS = {t.value: t for t in Trigger}  # a dict lookup costs a tenth of Trigger(text)
_STATUSES = {s.value: s for s in Status}


_NOT_DONE = (None, None, None)  # started_at, ended_at, duration_seconds of a row not finished


@dataclass(frozen=True)
class NewExecution:
    """A row to insert; ``fire_key`` is set on cron fires only (it makes them unique)."""

    task_id: str
    file_path: str
    task: str
    task_time: datetime | None
    trigger: Trigger
    info: str
    meta: Mapping[str, str]
    not_before: datetime
    attempt: int = 1
    status: Status = Status.QUEUED
    msg: str = ""
    parent_execution_id: int | None = None
    fire_key: str | None = None

    def row(self, stamp: str) -> tuple[Any, ...]:
        """The values of ``INSERT_COLUMNS`` for this row, ``stamp`` being ``iso(now)``."""
        head, tail, done = self.settled
        return (*head, stamp, *tail, *((stamp, stamp, 0.0) if done else _NOT_DONE))

    def settle(self) -> None:
        """Compute and keep now what ``row`` needs besides the stamp (see ``settled``)."""
        _ = self.settled

    @cached_property
    def settled(self) -> tuple[tuple[Any, ...], tuple[Any, ...], bool]:
        """The values that do not depend on when the row is stored, computed once: a cron fire
        built ahead of its time leaves its tick only the insert."""
        topic, _, job = self.task.partition(":")
        head = (
            self.task_id,
            self.file_path,
            self.task,
            topic,
            job,
            iso(self.task_time) if self.task_time else None,
            self.attempt,
            self.trigger.value,
            self.status.value,
            self.info,
            json.dumps(dict(self.meta), sort_keys=True) if self.meta else "{}",
            self.msg,
        )
        tail = (iso(self.not_before), self.parent_execution_id, self.fire_key)
        return head, tail, self.status in FINISHED

    def values(self, now: datetime) -> dict[str, Any]:
        return dict(zip(INSERT_COLUMNS, self.row(iso(now)), strict=True))


@dataclass(frozen=True)
class Execution:
    """An ``executions`` row, typed."""

    id: int
    task_id: str
    file_path: str
    task: str
    topic: str
    job: str
    task_time: datetime | None
    attempt: int
    trigger: Trigger
    status: Status
    info: str
    meta: dict[str, str]
    msg: str
    exit_code: int | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    not_before: datetime
    parent_execution_id: int | None
    pid: int | None

    @classmethod
    def from_tuple(cls, r: Sequence[Any]) -> Execution:
        """From a row of every ``executions`` column in table order (the hot path's SELECTs)."""
        return cls(
            r[0], r[1], r[2], r[3], r[4], r[5],
            _time(r[6]), r[7], _TRIGGERS[r[8]], _STATUSES[r[9]], r[10],
            json.loads(r[11]) if r[11] and r[11] != "{}" else {},
            r[12], r[13], from_iso(r[14]), _time(r[15]), _time(r[16]), from_iso(r[17]),
            r[18], r[19],
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: Any) -> Execution:
        m = row._mapping
        return cls(
            id=m["id"],
            task_id=m["task_id"],
            file_path=m["file_path"],
            task=m["task"],
            topic=m["topic"],
            job=m["job"],
            task_time=_time(m["task_time"]),
            attempt=m["attempt"],
            trigger=Trigger(m["trigger"]),
            status=Status(m["status"]),
            info=m["info"],
            meta=json.loads(m["meta"] or "{}"),
            msg=m["msg"],
            exit_code=m["exit_code"],
            created_at=from_iso(m["created_at"]),
            started_at=_time(m["started_at"]),
            ended_at=_time(m["ended_at"]),
            not_before=from_iso(m["not_before"]),
            parent_execution_id=m["parent_execution_id"],
            pid=m["pid"],
        )

    def again(
        self,
        not_before: datetime,
        *,
        attempt: int | None = None,
        meta: Mapping[str, str] | None = None,
        trigger: Trigger = Trigger.RETRY,
    ) -> NewExecution:
        """Another attempt of this execution: same chain, phase, task time, command and meta
        (unless ``meta`` is given); the next attempt number unless ``attempt`` is."""
        return NewExecution(
            task_id=self.task_id,
            file_path=self.file_path,
            task=self.task,
            task_time=self.task_time,
            trigger=trigger,
            info=self.info,
            meta=dict(self.meta if meta is None else meta),
            not_before=not_before,
            attempt=self.attempt + 1 if attempt is None else attempt,
            parent_execution_id=self.parent_execution_id,
        )

    def as_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: iso(v) if isinstance(v, datetime) else v for k, v in data.items()}


@dataclass(frozen=True)
class Finish:
    """The end of one execution, to be written back."""

    execution_id: int
    status: Status
    msg: str
    exit_code: int | None
    started_at: datetime
    ended_at: datetime
    pid: int | None = None
    meta: Mapping[str, str] | None = None  # the row's meta with what it emitted; None: unchanged


@dataclass(frozen=True)
class NewAlert:
    execution_id: int | None
    task_id: str
    file_path: str
    task: str
    task_time: datetime | None
    kind: str  # "failed" (retries exhausted) or "alert" (an alert result)
    msg: str


@dataclass(frozen=True)
class LogRow:
    execution_id: int
    seq: int
    ts: datetime
    stream: str
    line: str


def _time(text: str | None) -> datetime | None:
    return from_iso(text) if text else None


# -- the tick's hot path: plain SQL through the DB-API (see store/dbapi.py) ------------------------

INSERT_COLUMNS = (
    "task_id",
    "file_path",
    "task",
    "topic",
    "job",
    "task_time",
    "attempt",
    "trigger",
    "status",
    "info",
    "meta",
    "msg",
    "created_at",
    "not_before",
    "parent_execution_id",
    "fire_key",
    "started_at",
    "ended_at",
    "duration_seconds",
)
_ALL = ", ".join(f'"{c.name}"' for c in executions.c)  # Execution.from_tuple's order
_INTO = "INSERT INTO executions (" + ", ".join(f'"{c}"' for c in INSERT_COLUMNS) + ")"
_INSERT = Statement(f"{_INTO} VALUES ({', '.join('?' * len(INSERT_COLUMNS))})")
# A cron fire already recorded is skipped (no row comes back); fire_key is NULL on other rows,
# and NULLs never conflict.
_INSERT_RETURNING_ID = ValuesStatement(
    _INTO, len(INSERT_COLUMNS), "ON CONFLICT (file_path, task, fire_key) DO NOTHING RETURNING id"
)
_INSERT_RETURNING_ALL = ValuesStatement(
    _INTO,
    len(INSERT_COLUMNS),
    f"ON CONFLICT (file_path, task, fire_key) DO NOTHING RETURNING {_ALL}",
)
_READY = Statement(
    f"SELECT {_ALL} FROM executions WHERE status = 'queued' AND not_before <= ? "
    "ORDER BY not_before, id LIMIT ?"
)
_CLAIM = Statement(
    "UPDATE executions SET status = 'running', started_at = ? WHERE id IN (SELECT id FROM "
    "executions WHERE status = 'queued' AND not_before <= ? ORDER BY not_before, id LIMIT ?) "
    f"RETURNING {_ALL}"
)
_MARK_RUNNING = Statement("UPDATE executions SET status = 'running', started_at = ? WHERE id = ?")
_FINISH = Statement(
    "UPDATE executions SET status = ?, msg = ?, exit_code = ?, started_at = ?, ended_at = ?, "
    "duration_seconds = ?, pid = ? WHERE id = ?"
)
_META = Statement("UPDATE executions SET meta = ? WHERE id = ?")
_PIDS = Statement("UPDATE executions SET pid = ?, started_at = ? WHERE id = ?")
_LOG = Statement(
    "INSERT INTO execution_logs (execution_id, seq, ts, stream, line) VALUES (?, ?, ?, ?, ?)"
)
_NEXT_QUEUED = select(func.min(executions.c.not_before)).where(
    executions.c.status == Status.QUEUED.value
)


def insert_executions(conn: Connection, rows: Sequence[NewExecution], now: datetime) -> int:
    """Insert rows; a cron fire already recorded (same phase and fire key) is skipped.

    Returns how many rows were inserted.
    """
    stamp = iso(now)
    plain = [row.row(stamp) for row in rows if not row.fire_key]
    fires = [row.row(stamp) for row in rows if row.fire_key]
    _INSERT.run_many(conn, plain)
    # Count what RETURNING gives back: executemany's rowcount is -1 on some drivers.
    return len(plain) + len(_INSERT_RETURNING_ID.rows(conn, fires))


def insert_returning_ids(
    conn: Connection, rows: Sequence[NewExecution], now: datetime
) -> list[int]:
    """Insert rows that are not cron fires (manual, backfill) and return their ids in order."""
    stamp = iso(now)
    return sorted(row[0] for row in _INSERT_RETURNING_ID.rows(conn, [r.row(stamp) for r in rows]))


def insert_claimed(
    conn: Connection, rows: Sequence[NewExecution], now: datetime
) -> list[Execution]:
    """Insert rows that start at once (status running) and return them with their ids."""
    stamp = iso(now)
    values = [_running(row.row(stamp), stamp) for row in rows]
    inserted = sorted(_INSERT_RETURNING_ALL.rows(conn, values), key=lambda r: r[0])
    return [Execution.from_tuple(r) for r in inserted]


_STATUS_AT = INSERT_COLUMNS.index("status")
_STARTED_AT = INSERT_COLUMNS.index("started_at")


def _running(values: tuple[Any, ...], stamp: str) -> tuple[Any, ...]:
    """An insert's values as a row that starts now (ids come in insertion order, so sorting
    what RETURNING gives back by id restores the order given)."""
    row = list(values)
    row[_STATUS_AT] = Status.RUNNING.value
    row[_STARTED_AT] = stamp
    return tuple(row)


def queued_ready(conn: Connection, now: datetime, limit: int) -> list[Execution]:
    """Queued rows whose time has come, oldest first, without claiming them."""
    return [Execution.from_tuple(row) for row in _READY.rows(conn, (iso(now), limit))]


def claim_ready(conn: Connection, now: datetime, limit: int) -> list[Execution]:
    """Mark up to ``limit`` ready queued rows running (started now), oldest first, and return
    them in that order: ``queued_ready`` and ``mark_running`` in one statement."""
    stamp = iso(now)
    rows = [Execution.from_tuple(r) for r in _CLAIM.rows(conn, (stamp, stamp, limit))]
    return sorted(rows, key=lambda e: (e.not_before, e.id))


def mark_running(conn: Connection, ids: Iterable[int], now: datetime) -> None:
    started = iso(now)
    _MARK_RUNNING.run_many(conn, [(started, i) for i in ids])


def record_finishes(conn: Connection, finishes: Sequence[Finish]) -> None:
    """Write each execution's end: status, msg, exit code, times and duration, pid, and
    emitted meta."""
    _FINISH.run_many(
        conn,
        [
            (
                f.status.value,
                f.msg,
                f.exit_code,
                iso(f.started_at),
                iso(f.ended_at),
                (f.ended_at - f.started_at).total_seconds(),
                f.pid,
                f.execution_id,
            )
            for f in finishes
        ],
    )
    metas = [
        (json.dumps(dict(f.meta), sort_keys=True), f.execution_id)
        for f in finishes
        if f.meta is not None
    ]
    _META.run_many(conn, metas)


def record_pids(conn: Connection, pids: Sequence[tuple[int, int | None, datetime]]) -> None:
    """Note the process id and real start time of executions that began."""
    _PIDS.run_many(conn, [(p, iso(t), e) for e, p, t in pids])


def insert_logs(conn: Connection, lines: Sequence[LogRow]) -> None:
    _LOG.run_many(conn, [(x.execution_id, x.seq, iso(x.ts), x.stream, x.line) for x in lines])


def delete_logs(conn: Connection, execution_ids: Sequence[int]) -> None:
    """Forget the stored output of these executions (recovery stores their full output anew)."""
    if execution_ids:
        conn.execute(delete(execution_logs).where(execution_logs.c.execution_id.in_(execution_ids)))


def requeue(conn: Connection, execution_ids: Sequence[int]) -> None:
    """Put running executions that provably never started back in the queue, untouched."""
    if execution_ids:
        conn.execute(
            update(executions)
            .where(executions.c.id.in_(execution_ids), executions.c.status == Status.RUNNING.value)
            .values(status=Status.QUEUED.value, started_at=None, pid=None)
        )


def insert_alerts(conn: Connection, rows: Sequence[NewAlert], now: datetime) -> None:
    if rows:
        conn.execute(
            insert(alerts),
            [
                {
                    "execution_id": a.execution_id,
                    "task_id": a.task_id,
                    "file_path": a.file_path,
                    "task": a.task,
                    "task_time": iso(a.task_time) if a.task_time else None,
                    "kind": a.kind,
                    "msg": a.msg,
                    "created_at": iso(now),
                }
                for a in rows
            ],
        )


def running_executions(conn: Connection) -> list[Execution]:
    query = select(executions).where(executions.c.status == Status.RUNNING.value)
    return [Execution.from_row(row) for row in conn.execute(query)]


def get_execution(conn: Connection, execution_id: int) -> Execution | None:
    row = conn.execute(select(executions).where(executions.c.id == execution_id)).first()
    return Execution.from_row(row) if row else None


def list_executions(
    conn: Connection,
    task: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[Execution]:
    """Newest first."""
    query = select(executions).order_by(executions.c.id.desc()).limit(limit)
    if task:
        query = query.where(executions.c.task == task)
    if status:
        query = query.where(executions.c.status == status)
    return [Execution.from_row(row) for row in conn.execute(query)]


def execution_logs_of(conn: Connection, execution_id: int) -> list[LogRow]:
    query = (
        select(execution_logs)
        .where(execution_logs.c.execution_id == execution_id)
        .order_by(execution_logs.c.seq)
    )
    return [
        LogRow(r.execution_id, r.seq, from_iso(r.ts), r.stream, r.line) for r in conn.execute(query)
    ]


def count_by_status(conn: Connection, statuses: Iterable[Status]) -> int:
    query = select(func.count()).where(executions.c.status.in_([s.value for s in statuses]))
    return int(conn.scalar(query) or 0)


def next_queued_time(conn: Connection) -> datetime | None:
    """The earliest ``not_before`` of a queued row, or None when nothing is queued."""
    value = conn.scalar(_NEXT_QUEUED)
    return from_iso(value) if value else None


def latest_by_phase(conn: Connection) -> dict[tuple[str, str], Execution]:
    """The newest execution of every phase that has one."""
    newest = (
        select(func.max(executions.c.id).label("id"))
        .group_by(executions.c.file_path, executions.c.task)
        .subquery()
    )
    query = select(executions).join(newest, executions.c.id == newest.c.id)
    rows = [Execution.from_row(row) for row in conn.execute(query)]
    return {(row.file_path, row.task): row for row in rows}


# -- phase_state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseState:
    file_path: str
    task: str
    first_seen: datetime
    evaluated_until: datetime
    cron: str
    next_fire: datetime | None
    paused: bool


def phase_states(conn: Connection) -> dict[tuple[str, str], PhaseState]:
    result = {}
    for r in conn.execute(select(phase_state)):
        result[(r.file_path, r.task)] = PhaseState(
            r.file_path,
            r.task,
            from_iso(r.first_seen),
            from_iso(r.evaluated_until),
            r.cron,
            _time(r.next_fire),
            bool(r.paused),
        )
    return result


_SAVE_STATE = Statement(
    "INSERT INTO phase_state (file_path, task, first_seen, evaluated_until, cron, next_fire, "
    "paused) VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (file_path, task) DO UPDATE SET "
    "evaluated_until = excluded.evaluated_until, cron = excluded.cron, "
    "next_fire = excluded.next_fire"
)


def save_phase_states(conn: Connection, states: Sequence[PhaseState]) -> None:
    """Insert or update these phases' schedule columns. ``paused`` is left as stored: it is
    the command line's to set, and a running scheduler must never write it back stale."""
    _SAVE_STATE.run_many(
        conn,
        [
            (
                s.file_path,
                s.task,
                iso(s.first_seen),
                iso(s.evaluated_until),
                s.cron,
                iso(s.next_fire) if s.next_fire else None,
            )
            for s in states
        ],
    )


_PAUSED = Statement("SELECT file_path, task FROM phase_state WHERE paused = 1")


def paused_phases(conn: Connection) -> set[tuple[str, str]]:
    return {(row[0], row[1]) for row in _PAUSED.rows(conn)}


# -- cancel ----------------------------------------------------------------------------------------


class Cancel(StrEnum):
    """What ``request_cancel`` did."""

    CANCELLED = "cancelled"  # it was queued: cancelled at once
    REQUESTED = "requested"  # it is running: the scheduler running it will cancel it
    ENDED = "ended"  # it had already ended: nothing to do
    UNKNOWN = "unknown"  # no such execution


def request_cancel(
    conn: Connection, execution_id: int, now: datetime, by: str = ""
) -> tuple[Cancel, Execution | None]:
    """Cancel a queued execution now (``cancelled``, msg USER_CANCEL, nothing follows), or ask
    the scheduler to cancel a running one (kept in ``cancel_requests`` until it has)."""
    execution = get_execution(conn, execution_id)
    if execution is None:
        return Cancel.UNKNOWN, None
    if execution.status is Status.QUEUED:
        stamp = iso(now)
        conn.execute(
            update(executions)
            .where(executions.c.id == execution_id, executions.c.status == Status.QUEUED.value)
            .values(
                status=Status.CANCELLED.value,
                msg=USER_CANCEL,
                started_at=stamp,
                ended_at=stamp,
                duration_seconds=0.0,
            )
        )
        return Cancel.CANCELLED, execution
    if execution.status is Status.RUNNING:
        known = select(cancel_requests.c.execution_id).where(
            cancel_requests.c.execution_id == execution_id
        )
        if conn.execute(known).first() is None:
            conn.execute(
                insert(cancel_requests).values(
                    execution_id=execution_id, requested_at=iso(now), requested_by=by
                )
            )
        return Cancel.REQUESTED, execution
    return Cancel.ENDED, execution


_CANCEL_REQUESTS = select(cancel_requests.c.execution_id)


def cancel_requested(conn: Connection) -> list[int]:
    """Ids of executions a user asked to cancel whose end is not recorded yet."""
    return list(conn.execute(_CANCEL_REQUESTS).scalars())


def clear_cancel_requests(conn: Connection, execution_ids: Sequence[int]) -> None:
    if execution_ids:
        conn.execute(
            delete(cancel_requests).where(cancel_requests.c.execution_id.in_(execution_ids))
        )
