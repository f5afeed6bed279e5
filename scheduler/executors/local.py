"""``LocalExecutor``: runs launches as child processes on this machine, on worker threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.durations import format_duration
from scheduler.executors.base import Clock, Launch, Outcome, Result, Started, make_outcome
from scheduler.executors.board import Board, collect_until_idle
from scheduler.executors.command import (
    DEFAULT_KILL_GRACE,
    DEFAULT_LOG_CAP,
    Run,
    Worker,
    run_command,
)
from scheduler.executors.inprocess import call_python

log = logging.getLogger(__name__)


class LocalExecutor:
    """Runs launches as child processes, at most ``max_workers`` at a time.

    Each process gets its own session/process group, stdin from /dev/null, piped stdout/stderr
    and the TOMLFLOW_* environment. Timeout and cancel send SIGTERM to the whole group and
    SIGKILL ``kill_grace`` seconds later. Output beyond ``log_cap`` lines per execution is
    drained and dropped after a truncation marker. A launch with a ``callable`` (a Python
    worker) is called on the worker thread instead; like InProcessExecutor, it cannot be
    interrupted by a timeout or cancel.
    """

    def __init__(
        self,
        max_workers: int,
        now: Clock,
        log_cap: int = DEFAULT_LOG_CAP,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._now = now
        self._log_cap = log_cap
        self._kill_grace = kill_grace
        self._board: Board[Run] = Board()
        self._threads = [
            threading.Thread(target=self._work, name=f"tomlflow-exec-{i}", daemon=True)
            for i in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, launch: Launch) -> None:
        self._board.add(launch)

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        return self._board.collect(timeout)

    def started(self) -> list[Started]:
        return self._board.drain_started()

    def running(self) -> int:
        return self._board.pending()

    def cancel(self, execution_id: int, reason: str) -> None:
        launch = self._board.withdraw(execution_id)
        if launch is not None:
            at = self._now()
            self._board.report(make_outcome(launch, Result.CANCELLED, reason, at, at))
            return
        run = self._board.active(execution_id)
        if run is not None:
            run.stop(Result.CANCELLED, reason)

    def shutdown(self, grace: float) -> list[Outcome]:
        at = self._now()
        for launch in self._board.close():
            msg = "executor shut down before it started"
            self._board.report(make_outcome(launch, Result.CANCELLED, msg, at, at))
        outcomes = collect_until_idle(self, self._board, grace)
        msg = f"executor shut down: still running after {format_duration(timedelta(seconds=grace))}"
        for run in self._board.actives():
            run.stop(Result.CANCELLED, msg)
        outcomes += collect_until_idle(self, self._board, None)
        for thread in self._threads:
            thread.join()
        return outcomes

    def _work(self) -> None:
        worker = Worker()
        try:
            while (item := self._board.take(self._new_run(worker))) is not None:
                launch, run = item
                self._board.finish(launch.execution_id, self._guarded(launch, run, worker))
        finally:
            worker.close()

    def _new_run(self, worker: Worker) -> Callable[[Launch], Run]:
        return lambda _launch: Run(worker.wake_w, self._kill_grace)

    def _guarded(self, launch: Launch, run: Run, worker: Worker) -> Outcome:
        # A bug here must not kill the worker thread: the engine would wait forever.
        started_at = self._now()
        try:
            return self._execute(launch, run, worker, started_at)
        except Exception as exc:
            log.exception("executor failure on execution %s", launch.execution_id)
            msg = f"executor failure: {type(exc).__name__}: {exc}"
            return make_outcome(launch, Result.ERROR, msg, started_at, self._now())

    def _execute(self, launch: Launch, run: Run, worker: Worker, started_at: datetime) -> Outcome:
        eid = launch.execution_id
        if launch.callable is not None:  # a Python worker: called on this thread, no process
            self._board.note_started(eid, None, started_at)
            result, msg, meta = call_python(launch)
            return make_outcome(launch, result, msg, started_at, self._now(), meta=meta)

        def on_start(pid: int | None, at: datetime) -> None:
            self._board.note_started(eid, pid, at)

        return run_command(launch, run, worker, self._now, self._log_cap, on_start)
