"""``InProcessExecutor``: calls Python callables on threads (Python workers, benchmarks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.durations import format_duration
from scheduler.executors.base import (
    Clock,
    Launch,
    LogLine,
    Orphan,
    Outcome,
    Recovery,
    Reply,
    Result,
    Started,
    make_outcome,
)
from scheduler.executors.board import Board, collect_until_idle

IN_PROCESS_LOST = (
    "outcome unknown: a Python worker runs inside the scheduler process and ended with it"
)


@dataclass
class _Call:
    launch: Launch
    started_at: datetime
    deadline: float | None


def _call_notice(call: _Call) -> Started:
    return (call.launch.execution_id, None, call.started_at)


def _as_reply(value: object) -> Reply:
    """Normalise what a callable returned; raises TypeError for anything else."""
    if value is None:
        return Reply()
    if isinstance(value, Result):
        return Reply(value)
    if isinstance(value, Reply):
        return value
    raise TypeError(f"callable returned {type(value).__name__}; expected Result, Reply or None")


class InProcessExecutor:
    """Calls ``launch.callable(launch)`` on up to ``max_workers`` threads.

    The callable returns a ``Result``, a ``Reply`` or ``None`` (complete); an exception it raises
    is an ERROR with msg ``ExcType: message``. A thread cannot be interrupted, so cancel and
    timeout report at once while the call runs on and its eventual return value is dropped;
    its thread stays busy until then. Timeouts are noticed by ``collect``.
    """

    def __init__(self, max_workers: int, now: Clock) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._now = now
        self._board: Board[_Call] = Board()
        for i in range(max_workers):
            name = f"tomlflow-call-{i}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def submit(self, launch: Launch) -> None:
        self._board.add(launch)

    def started(self) -> list[Started]:
        return self._board.drain_started()

    def running(self) -> int:
        return self._board.pending()

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            nearest = self._expire_overdue()
            waits = [t - time.monotonic() for t in (end, nearest) if t is not None]
            wait = max(0.0, min(waits)) if waits else None
            outcomes = self._board.collect(wait, until_activation=True)
            if outcomes or not self._board.pending():
                return outcomes
            if end is not None and time.monotonic() >= end:
                return outcomes

    def lines(self) -> list[LogLine]:
        return []  # a callable's output is not captured

    def recover(self, orphans: Sequence[Orphan], local: bool) -> Recovery:
        """Nothing a callable did outlives the process: every orphan's outcome is unknowable."""
        now = self._now()
        return Recovery(
            outcomes=[
                make_outcome(
                    o.execution_id, Result.ERROR, IN_PROCESS_LOST, o.started_at or now, now
                )
                for o in orphans
            ]
        )

    def release(self, execution_ids: Iterable[int]) -> None:
        pass  # no receipts are kept

    def cancel(self, execution_id: int, reason: str) -> None:
        at = self._now()
        launch = self._board.withdraw(execution_id)
        if launch is not None:
            self._board.report(make_outcome(launch.execution_id, Result.CANCELLED, reason, at, at))
            return
        call = self._board.active(execution_id)
        if call is not None:
            outcome = make_outcome(
                call.launch.execution_id, Result.CANCELLED, reason, call.started_at, at
            )
            self._board.finish(execution_id, outcome)

    def shutdown(self, grace: float) -> list[Outcome]:
        for launch in self._board.close():
            at = self._now()
            msg = "executor shut down before it started"
            self._board.report(make_outcome(launch.execution_id, Result.CANCELLED, msg, at, at))
        outcomes = collect_until_idle(self, self._board, grace)
        msg = f"executor shut down: still running after {format_duration(timedelta(seconds=grace))}"
        for call in self._board.actives():
            self.cancel(call.launch.execution_id, msg)
        return outcomes + self._board.collect(0)

    def _expire_overdue(self) -> float | None:
        """End overdue calls with a timeout ERROR; return the nearest deadline left."""
        nearest: float | None = None
        for call in self._board.actives():
            if call.deadline is None:
                continue
            if time.monotonic() >= call.deadline:
                assert call.launch.timeout is not None
                msg = f"timeout after {format_duration(call.launch.timeout)}"
                outcome = make_outcome(
                    call.launch.execution_id, Result.ERROR, msg, call.started_at, self._now()
                )
                self._board.finish(call.launch.execution_id, outcome)
            elif nearest is None or call.deadline < nearest:
                nearest = call.deadline
        return nearest

    def _start(self, launch: Launch) -> _Call:
        timeout = launch.timeout
        deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()
        return _Call(launch, self._now(), deadline)

    def _work(self) -> None:
        while (item := self._board.take(self._start, _call_notice)) is not None:
            launch, call = item
            result, msg, meta = call_python(launch)
            outcome = make_outcome(
                launch.execution_id, result, msg, call.started_at, self._now(), meta=meta
            )
            self._board.finish(launch.execution_id, outcome)


def call_python(launch: Launch) -> tuple[Result, str, Mapping[str, str]]:
    """Run ``launch.callable`` on this thread; its exception or odd return is an ERROR."""
    if launch.callable is None:
        return Result.ERROR, "launch has no callable", {}
    try:
        reply = _as_reply(launch.callable(launch))
    except Exception as exc:  # the callable's failure is its result, by contract
        return Result.ERROR, f"{type(exc).__name__}: {exc}", {}
    return reply.result, reply.msg, reply.meta
