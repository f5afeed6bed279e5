"""``LocalExecutor``: runs launches as processes on this machine, on worker threads.

Every command runs under a supervisor that leaves its receipts in the spool (see ``command`` and
``spool``), so its outcome survives the scheduler: ``recover`` settles what a dead scheduler left
running, adopting the supervisors still alive.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from scheduler.config import Config
from scheduler.durations import format_duration
from scheduler.executors.base import (
    Clock,
    Launch,
    LogLine,
    Orphan,
    Outcome,
    Recovery,
    Result,
    Started,
    make_outcome,
)
from scheduler.executors.board import Board, collect_until_idle
from scheduler.executors.command import (
    DEFAULT_KILL_GRACE,
    Run,
    Waker,
    follow_adopted,
    open_pidfd,
    replay,
    run_command,
)
from scheduler.executors.inprocess import IN_PROCESS_LOST, call_python
from scheduler.executors.output import Caps
from scheduler.executors.spool import Spool

log = logging.getLogger(__name__)

NOT_HERE = "outcome unknown: it ran on another machine, whose scheduler stopped"
RELEASE_BATCH = 64  # released executions handed to the janitor at once ...
RELEASE_EVERY = 0.5  # ... or after this many seconds; what a crash leaves, the next start sweeps


class LocalExecutor:
    """Runs launches as processes, at most ``max_workers`` at a time (adopted ones aside).

    Each command runs under a supervisor in its own session/process group, stdin from
    /dev/null, output appended to the spool and the TOMLFLOW_* environment. Timeout and cancel
    send SIGTERM to the group and to every process carrying the execution's tag, SIGKILL
    ``kill_grace`` seconds later; when the command ends, what is left of its group is killed.
    Output is capped by ``caps``. A launch with a ``callable`` (a Python worker) is called on
    the worker thread instead; like InProcessExecutor, it cannot be interrupted.

    ``spool`` is the receipts folder; without one a private temporary folder is used (and
    removed at shutdown), so nothing can be recovered after a crash.
    """

    def __init__(
        self,
        max_workers: int,
        now: Clock,
        caps: Caps | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        spool: Path | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._now = now
        self._caps = caps or Caps()
        self._kill_grace = kill_grace
        self._private = spool is None
        self.spool = Spool(
            Path(tempfile.mkdtemp(prefix="tomlflow-spool-")) if spool is None else spool
        )
        self._board: Board[Run] = Board()
        self._threads = [
            threading.Thread(target=self._work, name=f"tomlflow-exec-{i}", daemon=True)
            for i in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()
        self._called: set[int] = set()  # Python workers' executions: nothing in the spool
        self._released: list[int] = []  # recorded ends whose files the janitor will delete
        self._release_due = 0.0  # monotonic
        self._janitor: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._janitor_thread = threading.Thread(
            target=self._sweep_released, name="tomlflow-spool-janitor", daemon=True
        )
        self._janitor_thread.start()

    @classmethod
    def for_config(cls, config: Config, now: Clock) -> LocalExecutor:
        """The executor ``config`` describes: its workers, spool folder and output caps."""
        caps = Caps(config.output_max_lines, config.output_max_bytes, config.output_max_line)
        return cls(config.max_workers, now, caps=caps, spool=config.spool_dir)

    def submit(self, launch: Launch) -> None:
        self._board.add(launch)

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        return self._board.collect(timeout)

    def started(self) -> list[Started]:
        return self._board.drain_started()

    def running(self) -> int:
        return self._board.pending()

    def lines(self) -> list[LogLine]:
        found: list[LogLine] = []
        for run in self._board.actives():
            if run.output is not None:
                found += run.output.take()
        return found

    def release(self, execution_ids: Iterable[int]) -> None:
        # Deleting files costs the engine's thread more than recording an end: a janitor thread
        # does it. Files not deleted yet when we die are swept by the next start's recovery.
        # The janitor is woken for a batch, not every tick: waking a thread costs the engine's
        # thread the interpreter lock. A Python worker leaves no files at all.
        ids = list(execution_ids)
        self._released += [i for i in ids if i not in self._called]
        self._called.difference_update(ids)
        if len(self._released) >= RELEASE_BATCH or (
            self._released and time.monotonic() >= self._release_due
        ):
            self._flush_released()

    def _flush_released(self) -> None:
        if self._released:
            self._janitor.put(self._released)
            self._released = []
        self._release_due = time.monotonic() + RELEASE_EVERY

    def _sweep_released(self) -> None:
        while (ids := self._janitor.get()) is not None:
            self.spool.release(ids)

    def cancel(self, execution_id: int, reason: str) -> None:
        launch = self._board.withdraw(execution_id)
        if launch is not None:
            at = self._now()
            self._board.report(make_outcome(execution_id, Result.CANCELLED, reason, at, at))
            return
        run = self._board.active(execution_id)
        if run is not None:
            run.stop(Result.CANCELLED, reason)

    def shutdown(self, grace: float) -> list[Outcome]:
        at = self._now()
        for launch in self._board.close():
            msg = "executor shut down before it started"
            outcome = make_outcome(launch.execution_id, Result.CANCELLED, msg, at, at)
            self._board.report(outcome)
        outcomes = collect_until_idle(self, self._board, grace)
        msg = f"executor shut down: still running after {format_duration(timedelta(seconds=grace))}"
        for run in self._board.actives():
            run.stop(Result.CANCELLED, msg)
        outcomes += collect_until_idle(self, self._board, None)
        for thread in self._threads:
            thread.join()
        self._flush_released()
        self._janitor.put(None)
        self._janitor_thread.join()
        if self._private:
            shutil.rmtree(self.spool.path, ignore_errors=True)
        return outcomes

    # -- recovery ---------------------------------------------------------------------------

    def recover(self, orphans: Sequence[Orphan], local: bool) -> Recovery:
        ours = [run.execution_id for run in self._board.actives()]
        swept = self.spool.sweep([*ours, *(o.execution_id for o in orphans)])
        if swept:
            log.info("deleted the receipts of %d executions no longer running", swept)
        recovery = Recovery()
        for orphan in orphans:
            self._settle(orphan, local, recovery)
        return recovery

    def _settle(self, orphan: Orphan, local: bool, recovery: Recovery) -> None:
        """Put ``orphan`` in the one list of ``recovery`` the receipts say it belongs to."""
        eid, now = orphan.execution_id, self._now()
        if orphan.in_process:
            recovery.outcomes.append(_unknown(orphan, IN_PROCESS_LOST, now))
            return
        pid = self.spool.supervisor_pid(eid) or orphan.pid or self.spool.leader(eid)
        if pid and self.spool.carries_tag(pid, eid) and self._adopt(orphan, pid):
            recovery.adopted.append(eid)
            recovery.reparsed.append(eid)
        elif self.spool.receipt(eid) or self.spool.stop(eid):
            recovery.outcomes.append(replay(orphan, self.spool, now, self._caps))
            recovery.reparsed.append(eid)
        elif not local:
            recovery.outcomes.append(_unknown(orphan, NOT_HERE, now))
        elif pid is None:  # the supervisor never wrote its pid: the command never started
            recovery.unstarted.append(eid)
        elif self.spool.has_output(eid):
            recovery.outcomes.append(replay(orphan, self.spool, now, self._caps))
            recovery.reparsed.append(eid)
        else:
            recovery.outcomes.append(replay(orphan, self.spool, now, self._caps))

    def _adopt(self, orphan: Orphan, pid: int) -> bool:
        """Follow a live supervisor on a thread of its own; False if it ended meanwhile."""
        pidfd = open_pidfd(pid)
        if pidfd is None:
            return False
        if not self.spool.carries_tag(pid, orphan.execution_id):  # ended before the pidfd
            os.close(pidfd)
            return False
        waker = Waker()
        run = Run(orphan.execution_id, self.spool, waker.wake_w, self._kill_grace)
        self._board.activate(orphan.execution_id, run)
        if orphan.pid is None and orphan.started_at is not None:
            self._board.note_started(orphan.execution_id, pid, orphan.started_at)
        thread = threading.Thread(
            target=self._follow,
            args=(orphan, pid, pidfd, run, waker),
            daemon=True,
            name=f"tomlflow-adopt-{orphan.execution_id}",
        )
        self._threads.append(thread)
        thread.start()
        log.info("adopted execution %d (supervisor pid %d)", orphan.execution_id, pid)
        return True

    def _follow(self, orphan: Orphan, pid: int, pidfd: int, run: Run, waker: Waker) -> None:
        try:
            outcome = follow_adopted(
                orphan, pid, pidfd, run, self.spool, waker, self._now, self._caps
            )
        except Exception as exc:  # a bug must not leave the execution in flight forever
            log.exception("executor failure on adopted execution %s", orphan.execution_id)
            msg = f"executor failure: {type(exc).__name__}: {exc}"
            outcome = _unknown(orphan, msg, self._now())
        finally:
            waker.close()
        self._board.finish(orphan.execution_id, outcome)

    # -- worker threads ---------------------------------------------------------------------

    def _work(self) -> None:
        waker = Waker()
        try:
            while (item := self._board.take(self._new_run(waker))) is not None:
                launch, run = item
                self._board.finish(launch.execution_id, self._guarded(launch, run, waker))
        finally:
            waker.close()

    def _new_run(self, waker: Waker) -> Callable[[Launch], Run]:
        return lambda launch: Run(launch.execution_id, self.spool, waker.wake_w, self._kill_grace)

    def _guarded(self, launch: Launch, run: Run, waker: Waker) -> Outcome:
        # A bug here must not kill the worker thread: the engine would wait forever.
        started_at = self._now()
        try:
            return self._execute(launch, run, waker, started_at)
        except Exception as exc:
            log.exception("executor failure on execution %s", launch.execution_id)
            msg = f"executor failure: {type(exc).__name__}: {exc}"
            return make_outcome(launch.execution_id, Result.ERROR, msg, started_at, self._now())

    def _execute(self, launch: Launch, run: Run, waker: Waker, started_at: datetime) -> Outcome:
        eid = launch.execution_id
        if launch.callable is not None:  # a Python worker: called on this thread, no process
            self._called.add(eid)  # before its outcome is published, so release sees it
            self._board.note_started(eid, None, started_at)
            result, msg, meta = call_python(launch)
            return make_outcome(eid, result, msg, started_at, self._now(), meta=meta)

        def on_start(pid: int | None, at: datetime) -> None:
            self._board.note_started(eid, pid, at)

        return run_command(launch, run, self.spool, waker, self._now, self._caps, on_start)


def _unknown(orphan: Orphan, msg: str, now: datetime) -> Outcome:
    started = orphan.started_at or now
    return make_outcome(orphan.execution_id, Result.ERROR, msg, started, now, pid=orphan.pid)
