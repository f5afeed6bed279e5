"""Operator writes: rerunning an execution (optionally clearing what it queued downstream),
pausing or resuming a phase's cron, and marking an execution complete or error by hand.

Each public write runs inside the caller's one write transaction, so that the checks it makes
(nothing of this task still queued, which children are still queued) hold when it writes: a
running scheduler claims rows in its own write transaction, never half-way through ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, func, insert, select, update

from scheduler.errors import TomlflowError
from scheduler.store import lease
from scheduler.store.history import (
    Execution,
    NewExecution,
    Status,
    get_execution,
    insert_executions,
)
from scheduler.store.schema import executions, phase_state
from scheduler.tasktime import iso

_ACTIVE = (Status.QUEUED.value, Status.RUNNING.value)


@dataclass(frozen=True)
class Rerun:
    """What ``queue_rerun`` did: the new execution and the queued descendants it cancelled."""

    execution_id: int
    attempt: int
    cancelled: tuple[int, ...]


def queue_rerun(conn: Connection, execution_id: int, downstream: bool, now: datetime) -> Rerun:
    """Queue a new attempt of a finished execution: same chain, task time, info and meta.

    The attempt number follows the highest of its chain for its phase. With ``downstream``, the
    still-queued descendants (by ``parent_execution_id``, from this execution and its other
    attempts of the same task time) are cancelled; finished ones stay as history. The rerun
    releases fresh children when it completes, as any run does. Raises TomlflowError when
    there is no such execution, it was skipped (it never had a command), or an attempt of it
    is queued or running.
    """
    execution = get_execution(conn, execution_id)
    if execution is None:
        raise TomlflowError(f"no execution with id {execution_id}")
    if execution.status is Status.SKIPPED:
        raise TomlflowError(
            f"execution {execution_id} was skipped ({execution.msg}): retry its parent instead"
        )
    active = _active_attempt(conn, execution)
    if active is not None:
        raise TomlflowError(
            f"execution {active.id} of {execution.task} for this task time is still "
            f"{active.status.value}: wait for it to end"
        )
    attempt = _highest_attempt(conn, execution) + 1
    cancelled: list[int] = []
    if downstream:
        cancelled = cancel_queued_descendants(conn, execution, now)
    new_id = _insert_one(conn, execution.again(now, attempt=attempt), now)
    return Rerun(new_id, attempt, tuple(cancelled))


def _same_task(execution: Execution) -> list[ColumnElement[bool]]:
    """Rows of the same chain, phase and task time: the attempts of one task."""
    c = executions.c
    same_time = (
        c.task_time.is_(None)
        if execution.task_time is None
        else c.task_time == iso(execution.task_time)
    )
    return [
        c.task_id == execution.task_id,
        c.file_path == execution.file_path,
        c.task == execution.task,
        same_time,
    ]


def _active_attempt(conn: Connection, execution: Execution) -> Execution | None:
    query = select(executions).where(*_same_task(execution), executions.c.status.in_(_ACTIVE))
    row = conn.execute(query.limit(1)).first()
    return Execution.from_row(row) if row else None


def _highest_attempt(conn: Connection, execution: Execution) -> int:
    c = executions.c
    query = select(func.max(c.attempt)).where(
        c.task_id == execution.task_id, c.file_path == execution.file_path, c.task == execution.task
    )
    return int(conn.scalar(query) or execution.attempt)


def _insert_one(conn: Connection, row: NewExecution, now: datetime) -> int:
    result = conn.execute(insert(executions).values(row.values(now)))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def descendants(conn: Connection, execution: Execution) -> list[int]:
    """Ids of the rows released, directly or not, by ``execution`` or another attempt of it.

    Children carry their parent's chain id, so only that chain is read.
    """
    c = executions.c
    rows = conn.execute(
        select(c.id, c.parent_execution_id).where(c.task_id == execution.task_id)
    ).all()
    roots = {r.id for r in conn.execute(select(c.id).where(*_same_task(execution)))}
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.parent_execution_id is not None:
            children.setdefault(row.parent_execution_id, []).append(row.id)
    found: list[int] = []
    frontier = sorted(roots)
    while frontier:
        nxt = [child for parent in frontier for child in children.get(parent, [])]
        found.extend(nxt)
        frontier = nxt
    return found


def cancel_queued_descendants(conn: Connection, execution: Execution, now: datetime) -> list[int]:
    """Cancel the still-queued descendants of ``execution``; returns their ids."""
    ids = descendants(conn, execution)
    if not ids:
        return []
    c = executions.c
    queued = [
        r.id
        for r in conn.execute(
            select(c.id).where(c.id.in_(ids), c.status == Status.QUEUED.value).order_by(c.id)
        )
    ]
    if queued:
        conn.execute(
            update(executions)
            .where(c.id.in_(queued), c.status == Status.QUEUED.value)
            .values(
                status=Status.CANCELLED.value,
                msg=f"superseded by rerun of {execution.id}",
                ended_at=iso(now),
            )
        )
    return queued


def set_paused(conn: Connection, file_path: str, task: str, paused: bool, now: datetime) -> bool:
    """Set a phase's ``paused`` flag; returns whether it changed.

    A phase the scheduler has not planned yet gets its state row here, with ``cron`` empty so
    the scheduler plans it afresh (its schedule starting at ``now``) while keeping the flag.
    """
    where = and_(phase_state.c.file_path == file_path, phase_state.c.task == task)
    current = conn.scalar(select(phase_state.c.paused).where(where))
    if current is None:
        conn.execute(
            insert(phase_state).values(
                file_path=file_path,
                task=task,
                first_seen=iso(now),
                evaluated_until=iso(now),
                cron="",
                next_fire=None,
                paused=int(paused),
            )
        )
        return paused
    if bool(current) == paused:
        return False
    conn.execute(update(phase_state).where(where).values(paused=int(paused)))
    return True


# -- mark ---------------------------------------------------------------------------------------


class MarkRefused(TomlflowError):
    """The execution cannot be marked now (it is queued, or a live scheduler is running it)."""


@dataclass(frozen=True)
class Marked:
    """What ``mark`` did: the execution as it was, and how many rows the mark released."""

    before: Execution
    changed: bool
    released: int


MARKABLE = (Status.COMPLETE, Status.ERROR)
Release = Callable[[Execution], Sequence[NewExecution]]


def mark(
    conn: Connection,
    execution_id: int,
    status: Status,
    msg: str,
    now: datetime,
    release: Release,
) -> Marked:
    """Set a finished (or stuck running) execution's status to ``complete`` or ``error``.

    Marking complete inserts what ``release(execution)`` returns (its children), in this same
    transaction, as a real completion would; marking error releases nothing and queues no retry.
    An execution already in ``status`` is left alone. Raises TomlflowError for an unknown id,
    MarkRefused for a queued execution or a running one while a live scheduler holds the lease
    (it would record the real end too: cancel it instead).
    """
    if status not in MARKABLE:
        raise ValueError(f"can only mark complete or error, not {status}")
    execution = get_execution(conn, execution_id)
    if execution is None:
        raise TomlflowError(f"no execution with id {execution_id}")
    _check_markable(conn, execution, now)
    if execution.status is status:
        return Marked(execution, False, 0)
    started, ended = execution.started_at or now, execution.ended_at or now
    conn.execute(
        update(executions)
        .where(executions.c.id == execution_id)
        .values(
            status=status.value,
            msg=msg,
            started_at=iso(started),
            ended_at=iso(ended),
            duration_seconds=(ended - started).total_seconds(),
        )
    )
    rows = list(release(execution)) if status is Status.COMPLETE else []
    insert_executions(conn, rows, now)
    return Marked(execution, True, len(rows))


def _check_markable(conn: Connection, execution: Execution, now: datetime) -> None:
    if execution.status is Status.QUEUED:
        raise MarkRefused(
            f"execution {execution.id} is queued and has not run: cancel it instead of marking it"
        )
    holder = lease.current(conn)
    if execution.status is Status.RUNNING and holder is not None and not holder.is_gone(now):
        raise MarkRefused(
            f"execution {execution.id} is running under the scheduler (pid {holder.pid} on "
            f"{holder.host}), which will record its end: cancel it first, then mark it"
        )
