"""Thread-safe bookkeeping shared by the executors that run launches on their own threads."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from scheduler.errors import ExecutorError
from scheduler.executors.base import Executor, Launch, Outcome, Started

S = TypeVar("S")


class Board(Generic[S]):
    """Thread-safe state shared by an executor's callers and its worker threads.

    Holds the FIFO of waiting launches, the per-run state ``S`` of active ones, the finished
    outcomes and the start notices. An execution is "in flight" while waiting or active.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._finished = threading.Condition(self._lock)
        self._order: deque[int] = deque()
        self._waiting: dict[int, Launch] = {}
        self._active: dict[int, S] = {}
        self._done: list[Outcome] = []
        self._started: list[Started] = []
        self._activations = 0
        self._closed = False

    def add(self, launch: Launch) -> None:
        """Queue ``launch``; raises ExecutorError when closed or its id is in flight."""
        eid = launch.execution_id
        with self._lock:
            if self._closed:
                raise ExecutorError(f"executor is shut down; cannot run execution {eid}")
            if eid in self._waiting or eid in self._active:
                raise ExecutorError(f"execution {eid} is already in flight")
            self._waiting[eid] = launch
            self._order.append(eid)
            self._work.notify()

    def take(
        self, make: Callable[[Launch], S], notice: Callable[[S], Started] | None = None
    ) -> tuple[Launch, S] | None:
        """Block for the oldest waiting launch and mark it active with state ``make(launch)``.

        ``notice``, when given, records the start in the same step, so it precedes any outcome
        another thread (cancel, timeout) may publish. Returns ``None`` once the board is closed.
        """
        with self._lock:
            while True:
                while self._order:
                    launch = self._waiting.pop(self._order.popleft(), None)
                    if launch is not None:  # None: it was withdrawn while waiting
                        state = make(launch)
                        self._active[launch.execution_id] = state
                        self._activations += 1
                        if notice is not None:
                            self._started.append(notice(state))
                            self._finished.notify_all()
                        return launch, state
                if self._closed:
                    return None
                self._work.wait()

    def activate(self, execution_id: int, state: S) -> None:
        """Mark active an execution that did not come through the FIFO (an adopted one)."""
        with self._lock:
            if self._closed:
                raise ExecutorError(f"executor is shut down; cannot adopt execution {execution_id}")
            self._active[execution_id] = state
            self._activations += 1
            self._finished.notify_all()

    def withdraw(self, execution_id: int) -> Launch | None:
        """Remove a launch that has not started yet; ``None`` when it is not waiting."""
        with self._lock:
            return self._waiting.pop(execution_id, None)

    def active(self, execution_id: int) -> S | None:
        with self._lock:
            return self._active.get(execution_id)

    def actives(self) -> list[S]:
        with self._lock:
            return list(self._active.values())

    def note_started(self, execution_id: int, pid: int | None, at: datetime) -> None:
        with self._lock:
            self._started.append((execution_id, pid, at))

    def drain_started(self) -> list[Started]:
        with self._lock:
            started, self._started = self._started, []
            return started

    def finish(self, execution_id: int, outcome: Outcome) -> bool:
        """Publish the outcome of an active execution; False (and dropped) if it is not active."""
        with self._lock:
            if self._active.pop(execution_id, None) is None:
                return False
            self._done.append(outcome)
            self._finished.notify_all()
            return True

    def report(self, outcome: Outcome) -> None:
        """Publish an outcome for a launch that never became active (withdrawn while waiting)."""
        with self._lock:
            self._done.append(outcome)
            self._finished.notify_all()

    def pending(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._active)

    def collect(self, timeout: float | None, until_activation: bool = False) -> list[Outcome]:
        """Return finished outcomes, waiting as ``Executor.collect`` describes.

        With ``until_activation`` the wait also ends (possibly empty) when a launch becomes
        active, so a caller can take its new deadline into account.
        """
        with self._lock:
            activations = self._activations

            def ready() -> bool:
                if until_activation and self._activations != activations:
                    return True
                return bool(self._done) or not (self._waiting or self._active)

            if timeout is None or timeout > 0:
                self._finished.wait_for(ready, timeout)
            done, self._done = self._done, []
            return done

    def close(self) -> list[Launch]:
        """Refuse further launches; return (and forget) those still waiting, oldest first."""
        with self._lock:
            self._closed = True
            waiting = [self._waiting[eid] for eid in self._order if eid in self._waiting]
            self._waiting.clear()
            self._order.clear()
            self._work.notify_all()
            self._finished.notify_all()
            return waiting


def collect_until_idle(executor: Executor, board: Board[S], limit: float | None) -> list[Outcome]:
    """Collect until nothing is in flight, for at most ``limit`` seconds (``None``: no limit)."""
    end = None if limit is None else time.monotonic() + limit
    outcomes: list[Outcome] = []
    while board.pending():
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            break
        outcomes += executor.collect(left)
    return outcomes + executor.collect(0)
