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
from typing import Any

from sqlalchemy import Connection, Insert, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

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

    def values(self, now: datetime) -> dict[str, Any]:
        topic, _, job = self.task.partition(":")
        return {
            "task_id": self.task_id,
            "file_path": self.file_path,
            "task": self.task,
            "topic": topic,
            "job": job,
            "task_time": iso(self.task_time) if self.task_time else None,
            "attempt": self.attempt,
            "trigger": self.trigger.value,
            "status": self.status.value,
            "info": self.info,
            "meta": json.dumps(dict(self.meta), sort_keys=True),
            "msg": self.msg,
            "created_at": iso(now),
            "not_before": iso(self.not_before),
            "parent_execution_id": self.parent_execution_id,
            "fire_key": self.fire_key,
            "started_at": iso(now) if self.status in FINISHED else None,
            "ended_at": iso(now) if self.status in FINISHED else None,
            "duration_seconds": 0.0 if self.status in FINISHED else None,
        }


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


def insert_executions(conn: Connection, rows: Sequence[NewExecution], now: datetime) -> int:
    """Insert rows; a cron fire already recorded (same phase and fire key) is skipped.

    Returns how many rows were inserted.
    """
    plain = [row.values(now) for row in rows if not row.fire_key]
    fires = [row.values(now) for row in rows if row.fire_key]
    if plain:
        conn.execute(insert(executions), plain)
    inserted = len(plain)
    if fires:
        # Count what RETURNING gives back: executemany's rowcount is -1 on some drivers.
        statement = _insert_ignoring_duplicates(conn).returning(executions.c.id)
        inserted += len(conn.execute(statement, fires).all())
    return inserted


_INSERT_CLAIMED = insert(executions).returning(*executions.c, sort_by_parameter_order=True)


def insert_claimed(
    conn: Connection, rows: Sequence[NewExecution], now: datetime
) -> list[Execution]:
    """Insert rows that start at once (status running) and return them with their ids."""
    if not rows:
        return []
    started = iso(now)
    values = [
        {**row.values(now), "status": Status.RUNNING.value, "started_at": started} for row in rows
    ]
    return [Execution.from_row(r) for r in conn.execute(_INSERT_CLAIMED, values)]


def _insert_ignoring_duplicates(conn: Connection) -> Insert:
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
    if dialect is None:
        return insert(executions)
    statement: Any = dialect.insert(executions)
    return statement.on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=["file_path", "task", "fire_key"]
    )


# The hot statements are built once: building them per call costs more than running them.
_READY = (
    select(executions)
    .where(executions.c.status == Status.QUEUED.value, executions.c.not_before <= bindparam("now_"))
    .order_by(executions.c.not_before, executions.c.id)
    .limit(bindparam("limit_"))
)
_MARK_RUNNING = (
    update(executions)
    .where(executions.c.id == bindparam("eid"))
    .values(status=Status.RUNNING.value, started_at=bindparam("started"))
)
_FINISH = (
    update(executions)
    .where(executions.c.id == bindparam("eid"))
    .values(
        status=bindparam("status_"),
        msg=bindparam("msg_"),
        exit_code=bindparam("code"),
        started_at=bindparam("started"),
        ended_at=bindparam("ended"),
        duration_seconds=bindparam("seconds"),
        pid=bindparam("pid_"),
    )
)
_META = (
    update(executions).where(executions.c.id == bindparam("eid")).values(meta=bindparam("meta_"))
)
_PIDS = (
    update(executions)
    .where(executions.c.id == bindparam("eid"))
    .values(pid=bindparam("pid_"), started_at=bindparam("started"))
)
_NEXT_QUEUED = select(func.min(executions.c.not_before)).where(
    executions.c.status == Status.QUEUED.value
)


def queued_ready(conn: Connection, now: datetime, limit: int) -> list[Execution]:
    """Queued rows whose time has come, oldest first, without claiming them."""
    rows = conn.execute(_READY, {"now_": iso(now), "limit_": limit})
    return [Execution.from_row(row) for row in rows]


def mark_running(conn: Connection, ids: Iterable[int], now: datetime) -> None:
    started = iso(now)
    params = [{"eid": i, "started": started} for i in ids]
    if params:
        conn.execute(_MARK_RUNNING, params)


def record_finishes(conn: Connection, finishes: Sequence[Finish]) -> None:
    """Write each execution's end: status, msg, exit code, times and duration, pid, and
    emitted meta."""
    if finishes:
        conn.execute(
            _FINISH,
            [
                {
                    "eid": f.execution_id,
                    "status_": f.status.value,
                    "msg_": f.msg,
                    "code": f.exit_code,
                    "started": iso(f.started_at),
                    "ended": iso(f.ended_at),
                    "seconds": (f.ended_at - f.started_at).total_seconds(),
                    "pid_": f.pid,
                }
                for f in finishes
            ],
        )
        metas = [
            {"eid": f.execution_id, "meta_": json.dumps(dict(f.meta), sort_keys=True)}
            for f in finishes
            if f.meta is not None
        ]
        if metas:
            conn.execute(_META, metas)


def record_pids(conn: Connection, pids: Sequence[tuple[int, int | None, datetime]]) -> None:
    """Note the process id and real start time of executions that began."""
    params = [{"eid": e, "pid_": p, "started": iso(t)} for e, p, t in pids]
    if params:
        conn.execute(_PIDS, params)


def insert_logs(conn: Connection, lines: Sequence[LogRow]) -> None:
    if lines:
        conn.execute(
            insert(execution_logs),
            [
                {
                    "execution_id": x.execution_id,
                    "seq": x.seq,
                    "ts": iso(x.ts),
                    "stream": x.stream,
                    "line": x.line,
                }
                for x in lines
            ],
        )


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


def save_phase_states(conn: Connection, states: Sequence[PhaseState]) -> None:
    """Insert or update these phases' schedule columns. ``paused`` is left as stored: it is
    the command line's to set, and a running scheduler must never write it back stale."""
    if not states:
        return
    params = [
        {
            "fp": s.file_path,
            "tk": s.task,
            "p_first": iso(s.first_seen),
            "p_eval": iso(s.evaluated_until),
            "p_cron": s.cron,
            "p_next": iso(s.next_fire) if s.next_fire else None,
        }
        for s in states
    ]
    where = and_(phase_state.c.file_path == bindparam("fp"), phase_state.c.task == bindparam("tk"))
    stored = {
        (r.file_path, r.task)
        for r in conn.execute(select(phase_state.c.file_path, phase_state.c.task))
    }
    old = [p for p in params if (p["fp"], p["tk"]) in stored]
    new = [p for p in params if (p["fp"], p["tk"]) not in stored]
    if old:
        conn.execute(
            update(phase_state)
            .where(where)
            .values(
                evaluated_until=bindparam("p_eval"),
                cron=bindparam("p_cron"),
                next_fire=bindparam("p_next"),
            ),
            old,
        )
    if new:
        conn.execute(
            insert(phase_state),
            [
                {
                    "file_path": p["fp"],
                    "task": p["tk"],
                    "first_seen": p["p_first"],
                    "evaluated_until": p["p_eval"],
                    "cron": p["p_cron"],
                    "next_fire": p["p_next"],
                    "paused": 0,
                }
                for p in new
            ],
        )


def paused_phases(conn: Connection) -> set[tuple[str, str]]:
    query = select(phase_state.c.file_path, phase_state.c.task).where(phase_state.c.paused == 1)
    return {(r.file_path, r.task) for r in conn.execute(query)}


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
