"""The engine: ``tick(now)`` decides and acts once; ``run_forever`` and ``run_once`` loop it.

One tick, in order:

1. refresh workflow files when the refresh interval has passed;
2. plan the cron fires that are due;
3. in ONE write transaction: record the cron fires, record every finished execution with its
   logs and what it releases (children, retry, alert), store the output running executions
   printed so far, read user cancels, and claim the queued rows that may start;
4. after that transaction commits, let the executor release the recorded ends' receipts, hand
   it the cancels and the claimed rows.

On start, what a stopped scheduler left running is settled from the executor's receipts
(``_recover``): true results are recorded as live ends are, live commands are adopted.

The database is the only source of truth about what is due and queued, so a restart resumes
exactly: retries are rows with ``not_before``, cron progress is ``phase_state.evaluated_until``.
The write transaction never spans a subprocess start.
"""

from __future__ import annotations

import heapq
import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection

from scheduler import dispatcher, filetrigger, notify, planner
from scheduler import graph as dag
from scheduler.catalog import Catalog
from scheduler.clock import Clock
from scheduler.config import Config
from scheduler.errors import TomlflowError
from scheduler.executors import Executor, Launch, LogLine, Outcome
from scheduler.followup import FollowUp, after_end
from scheduler.retry import draw_jitter
from scheduler.store import file_reports, history, lease, retention, watched
from scheduler.store.db import Database
from scheduler.store.file_reports import FileReport, Source
from scheduler.store.history import Execution, Finish, LogRow, NewExecution, PhaseState, Status
from scheduler.validation import PhaseSpec
from scheduler.watcher import FolderWatcher, Poll

log = logging.getLogger(__name__)

PhaseKey = tuple[str, str]
IDLE_POLL = timedelta(seconds=1)  # how often an idle daemon looks for rows queued by others
PRUNE_EVERY = timedelta(days=1)
WATCH_EVERY = timedelta(seconds=2)  # a scan of a few thousand files costs ~20 ms
CANCEL_POLL = 0.5  # seconds between looks for user cancels while something runs
_CANDIDATE_SLACK = 200  # extra queued rows read per claim, so per-phase limits don't starve others


@dataclass
class TickReport:
    """What one tick did; ``failed`` counts ends that released no retry (errors, alerts)."""

    fired: int = 0
    finished: int = 0
    started: int = 0
    failed: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    fires: list[NewExecution] = field(default_factory=list)  # cron rows this tick inserted
    ended: list[tuple[Execution, Finish]] = field(default_factory=list)


@dataclass(frozen=True)
class Watched:
    """One poll of the watched folder that changed something: the root, the poll (its diff is
    kept in the database), and the rows and reports of the files it found settled."""

    root: str
    poll: Poll
    rows: list[NewExecution]
    reports: list[FileReport]


class Snapshot:
    """The phases as of the last refresh, indexed for the engine's lookups."""

    def __init__(self, specs: list[PhaseSpec]) -> None:
        self.specs = {(s.file_path, s.task): s for s in specs}
        graph = dag.build(specs)
        self.children = {
            key: [self.specs[child] for child in sorted(graph.successors(key))] for key in graph
        }
        self.cron = [s for s in specs if s.runnable and s.rule and s.rule.cron is not None]
        # Only with per-phase limits can a candidate be passed over, so only then read extra.
        self.limited = any(s.rule and s.rule.concurrency for s in specs)


class Engine:
    """Fires, records and dispatches. Holds no truth the database does not also hold."""

    def __init__(
        self,
        config: Config,
        db: Database,
        executor: Executor,
        clock: Clock,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self.executor = executor
        self.clock = clock
        self.catalog = Catalog(db, config.workflows, clock)
        self.rng = rng or random.Random()
        self.workflows = config.workflow_root
        self._snapshot: Snapshot | None = None
        self._states: dict[PhaseKey, PhaseState] = {}
        self._running: dict[int, Execution] = {}
        self._early: list[Outcome] = []
        self._not_before: list[datetime] = []  # heap: future not_before of rows we queued
        self._next_poll: datetime | None = None
        self._heartbeat: datetime | None = None  # set while this engine holds the lease
        self._next_prune: datetime | None = None
        self._backlog = True  # whether the last claim may have left ready rows behind
        # Whether a queued row may be ready to start: when false, a tick skips the claim query.
        self._maybe_ready = True
        self._next_refresh: datetime | None = None
        self.refresh_requested = threading.Event()
        # Posts on a thread of its own; idle (no thread) without a webhook.
        self.notifier = notify.AlertThread(notify.Notifier(db, config.alerts))
        self.watcher: FolderWatcher | None = None  # seeded from the database at its first poll
        self._next_watch: datetime | None = None
        self._cancelling: set[int] = set()  # user cancels handed to the executor
        self._next_cancel_poll = 0.0  # monotonic

    # -- the tick ---------------------------------------------------------------------------

    def tick(self, now: datetime, *, fire_cron: bool = True) -> TickReport:
        """Decide and act once at ``now``."""
        snapshot = self._refresh_if_due(now)
        report = TickReport()
        outcomes, self._early = self._early + self.executor.collect(0), []
        started = self.executor.started()
        live = self.executor.lines()  # after collect: an ended execution's rest is its outcome's
        found = self._watch(snapshot, now)  # disk scan: outside the transaction
        with self.db.write() as conn:
            if self._heartbeat is not None and now - self._heartbeat >= lease.HEARTBEAT_EVERY:
                lease.renew(conn, now)
                self._heartbeat = now
            if fire_cron:
                report.fired = self._fire_cron(conn, snapshot, now, report)
                self._maybe_ready = self._maybe_ready or report.fired > 0
            if found is not None:
                self._record_watched(conn, found, now)
            claimed = self._record(conn, snapshot, outcomes, started, now, report)
            history.insert_logs(conn, [_log_row(x) for x in live])
            cancels = self._poll_cancels(conn)
            launches = self._launch(conn, snapshot, claimed, now, report)
            launches += self._claim(conn, snapshot, now, report)
        self.executor.release(o.execution_id for o in outcomes)  # only now that they are stored
        for execution_id in cancels:
            self._cancelling.add(execution_id)
            self.executor.cancel(execution_id, history.USER_CANCEL)
        if found is not None and self.watcher is not None:
            self.watcher.advance(found.poll)  # only now that its diff is stored
        for launch in launches:
            self.executor.submit(launch)
        report.started = len(launches)
        self.notifier.poll(now)  # hands due alerts to the alert thread; returns at once
        return report

    # -- the watched folder -------------------------------------------------------------------

    def _watch(self, snapshot: Snapshot, now: datetime) -> Watched | None:
        """Poll the watched folder (every WATCH_EVERY): rows and reports for the files that
        settled, and the poll, whose diff the tick stores; None when nothing changed."""
        root = self.config.watch
        if root is None or (self._next_watch is not None and now < self._next_watch):
            return None
        self._next_watch = now + WATCH_EVERY
        poll = self._watcher(root).check()
        if not poll.diff:
            return None
        rows: list[NewExecution] = []
        reports: list[FileReport] = []
        for path in poll.ready:
            fired = filetrigger.rows_for_file(
                snapshot.specs.values(), str(path), now, self.workflows
            )
            log.info("file %s fires %d tasks", path, len(fired))
            rows.extend(fired)
            reports.append(FileReport.of(str(path), Source.WATCH, fired))
        return Watched(str(root), poll, rows, reports)

    def _watcher(self, root: Path) -> FolderWatcher:
        """The watcher of ``root``, seeded on first use with the state the last run kept."""
        if self.watcher is None:
            with self.db.read() as conn:
                state = watched.load(conn, str(root))
            self.watcher = FolderWatcher(root, state=state)
        return self.watcher

    def _record_watched(self, conn: Connection, found: Watched, now: datetime) -> None:
        """Store a poll's diff with the reports and executions of the files it found."""
        watched.save(conn, found.root, found.poll.diff, now)
        file_reports.record(conn, found.reports, now)
        if found.rows:
            history.insert_executions(conn, found.rows, now)
            self._maybe_ready = True

    def _refresh_if_due(self, now: datetime) -> Snapshot:
        due = self._next_refresh is None or now >= self._next_refresh
        if due or self.refresh_requested.is_set() or self._snapshot is None:
            self.refresh_requested.clear()
            self._next_refresh = now + self.config.refresh
            try:
                changed = self.catalog.refresh().keys
            except TomlflowError as exc:  # the folder vanished: keep what we have
                log.error("refresh failed: %s", exc)
                changed = []
            if changed or self._snapshot is None:
                self._snapshot = Snapshot(self.catalog.phases())
                with self.db.read() as conn:
                    self._states = history.phase_states(conn)
        return self._snapshot

    # -- cron -------------------------------------------------------------------------------

    def _fire_cron(
        self, conn: Connection, snapshot: Snapshot, now: datetime, report: TickReport
    ) -> int:
        paused = history.paused_phases(conn)
        rows: list[NewExecution] = []
        states: list[PhaseState] = []
        for spec in snapshot.cron:
            key = (spec.file_path, spec.task)
            state = self._states.get(key)
            if state is not None and state.paused != (key in paused):
                state = replace(state, paused=key in paused)  # the command line flips it
            if not _needs_planning(spec, state, key in paused, now, self.config.timezone):
                continue
            plan = planner.plan_cron(spec, state, now, self.config.timezone)
            self._states[key] = plan.state
            states.append(plan.state)
            for fire in plan.fires:
                rows.extend(self._rows_or_error(fire, now))
        history.save_phase_states(conn, states)
        inserted = history.insert_executions(conn, rows, now)
        if inserted:
            report.fires.extend(rows)
        return inserted

    def _rows_or_error(self, fire: planner.Fire, now: datetime) -> list[NewExecution]:
        try:
            return planner.rows_for_fire(fire, now, self.workflows)
        except TomlflowError as exc:  # e.g. an unreadable meta-file: record it, fire nothing
            log.error("cannot fire %s: %s", fire.spec.task, exc)
            return [_error_row(fire.spec, now, str(exc))]

    # -- recording ends ---------------------------------------------------------------------

    def _record(
        self,
        conn: Connection,
        snapshot: Snapshot,
        outcomes: list[Outcome],
        started: list[tuple[int, int | None, datetime]],
        now: datetime,
        report: TickReport,
    ) -> list[Execution]:
        """Record ends and what they release; returns released rows claimed at once."""
        done = {o.execution_id for o in outcomes}
        history.record_pids(conn, [s for s in started if s[0] not in done])
        finishes: list[Finish] = []
        logs: list[LogRow] = []
        follow = FollowUp()
        cancelled = [o.execution_id for o in outcomes if o.execution_id in self._cancelling]
        self._cancelling.difference_update(cancelled)
        history.clear_cancel_requests(conn, cancelled)
        for outcome in outcomes:
            execution = self._running.pop(outcome.execution_id, None)
            if execution is None:
                continue
            finish, released = self._end(execution, outcome, snapshot, now)
            finishes.append(finish)
            logs.extend(_log_row(x) for x in outcome.logs)
            follow.rows.extend(released.rows)
            follow.alerts.extend(released.alerts)
            report.statuses[finish.status.value] += 1
            report.ended.append((execution, finish))
            if finish.status in (Status.ERROR, Status.ALERT) and not released.rows:
                report.failed += 1
        history.record_finishes(conn, finishes)
        history.insert_logs(conn, logs)
        direct, queued = self._split_direct(snapshot, follow.rows, now)
        history.insert_executions(conn, queued, now)
        for row in queued:
            if row.not_before > now:
                heapq.heappush(self._not_before, row.not_before)
            elif row.status is Status.QUEUED:
                self._maybe_ready = True
        history.insert_alerts(conn, follow.alerts, now)
        report.finished = len(finishes)
        return history.insert_claimed(conn, direct, now)

    def _split_direct(
        self, snapshot: Snapshot, rows: list[NewExecution], now: datetime
    ) -> tuple[list[NewExecution], list[NewExecution]]:
        """Released rows that may start at once, skipping the queue, and the rest.

        Only when no older row waits (the last claim emptied the queue) and no phase has a
        concurrency limit; otherwise everything goes through the queue, oldest first.
        """
        free = self.config.max_workers - self.executor.running()
        if self._backlog or snapshot.limited or free <= 0:
            return [], rows
        direct: list[NewExecution] = []
        queued: list[NewExecution] = []
        for row in rows:
            ready = row.status is Status.QUEUED and row.not_before <= now
            runnable = ready and (spec := snapshot.specs.get((row.file_path, row.task)))
            if runnable and spec and spec.runnable and len(direct) < free:
                direct.append(row)
            else:
                queued.append(row)
        return direct, queued

    def _end(
        self, execution: Execution, outcome: Outcome, snapshot: Snapshot, now: datetime
    ) -> tuple[Finish, FollowUp]:
        status = Status(outcome.result.value)
        key = (execution.file_path, execution.task)
        spec = snapshot.specs.get(key)
        released = after_end(
            execution,
            status,
            outcome.msg,
            outcome.meta,
            spec,
            snapshot.children.get(key, []),
            now,
            draw_jitter(self.rng),
            self.workflows,
        )
        meta = {**execution.meta, **outcome.meta} if outcome.meta else None
        finish = Finish(
            execution.id,
            status,
            outcome.msg,
            outcome.exit_code,
            outcome.started_at,
            outcome.ended_at,
            outcome.pid,
            meta,
        )
        return finish, released

    def _poll_cancels(self, conn: Connection) -> list[int]:
        """Running executions a user asked to cancel (``tomlflow cancel``), read at most every
        CANCEL_POLL and only while something runs; requests for ended ones are dropped."""
        if not self._running or time.monotonic() < self._next_cancel_poll:
            return []
        self._next_cancel_poll = time.monotonic() + CANCEL_POLL
        requested = history.cancel_requested(conn)
        history.clear_cancel_requests(conn, [i for i in requested if i not in self._running])
        return [i for i in requested if i in self._running and i not in self._cancelling]

    # -- claiming and launching ---------------------------------------------------------------

    def _claim(
        self, conn: Connection, snapshot: Snapshot, now: datetime, report: TickReport
    ) -> list[Launch]:
        free = self.config.max_workers - self.executor.running()
        if free <= 0 or not self._maybe_ready:
            return []
        slack = _CANDIDATE_SLACK if snapshot.limited else 0
        candidates = history.queued_ready(conn, now, free + slack)
        unrunnable = [c for c in candidates if not _runnable(snapshot, c)]
        if unrunnable:
            self._fail_unrunnable(conn, snapshot, unrunnable, now, report)
        per_phase = Counter((e.file_path, e.task) for e in self._running.values())
        chosen = dispatcher.select(
            (c for c in candidates if _runnable(snapshot, c)),
            snapshot.specs,
            dispatcher.Slots(free, per_phase),
        )
        history.mark_running(conn, [e.id for e in chosen], now)
        self._backlog = len(candidates) >= free + slack
        self._maybe_ready = self._backlog
        return self._launch(conn, snapshot, chosen, now, report)

    def _launch(
        self,
        conn: Connection,
        snapshot: Snapshot,
        chosen: list[Execution],
        now: datetime,
        report: TickReport,
    ) -> list[Launch]:
        """Launches for executions just marked running; one that cannot start ends as error."""
        launches, failures = [], []
        for execution in chosen:
            spec = snapshot.specs[(execution.file_path, execution.task)]
            try:
                launches.append(dispatcher.build_launch(execution, spec, self.config))
            except TomlflowError as exc:  # could not even start: an error result, not a crash
                failures.append(Finish(execution.id, Status.ERROR, str(exc), None, now, now))
                continue
            self._running[execution.id] = execution
        history.record_finishes(conn, failures)
        report.failed += len(failures)
        return launches

    def _fail_unrunnable(
        self,
        conn: Connection,
        snapshot: Snapshot,
        executions: list[Execution],
        now: datetime,
        report: TickReport,
    ) -> None:
        finishes = []
        for execution in executions:
            spec = snapshot.specs.get((execution.file_path, execution.task))
            msg = f"phase has errors: {spec.status}" if spec else "phase no longer exists"
            finishes.append(Finish(execution.id, Status.ERROR, msg, None, now, now))
            report.statuses[Status.ERROR.value] += 1
            report.failed += 1
        history.record_finishes(conn, finishes)

    # -- waiting and looping ------------------------------------------------------------------

    def next_wakeup(self, now: datetime) -> datetime:
        """When something may next be due: a cron fire, a queued row, a refresh, or a poll."""
        while self._not_before and self._not_before[0] <= now:
            heapq.heappop(self._not_before)  # due now: the next tick claims it
            self._maybe_ready = True
        if self._next_poll is None or now >= self._next_poll:
            # Rows queued by others (the command line, another process) are found by this poll.
            self._next_poll = now + IDLE_POLL
            with self.db.read() as conn:
                queued = history.next_queued_time(conn)
            if queued is not None and queued > now:
                heapq.heappush(self._not_before, queued)
            elif queued is not None:
                self._maybe_ready = True
        candidates = [self._next_poll]
        if self._next_refresh is not None:
            candidates.append(self._next_refresh)
        if self._not_before:
            candidates.append(self._not_before[0])
        candidates.extend(s.next_fire for s in self._states.values() if s.next_fire)
        return max(now, min(candidates))

    def wait(self, until: datetime) -> None:
        """Sleep until ``until``, waking early when an execution finishes.

        Outcomes that arrive meanwhile are kept for the next tick to record.
        """
        seconds = (until - self.clock.now()).total_seconds()
        if self._early or seconds <= 0:
            return
        if self.executor.running():
            self._early.extend(self.executor.collect(seconds))
            return
        self._early.extend(self.executor.collect(0))  # one may have ended since the tick
        if not self._early:
            self.clock.sleep(seconds)

    def start(self) -> None:
        """Take the lease (raises LeaseHeld) and settle what a stopped scheduler left running."""
        now = self.clock.now()
        snapshot = self._refresh_if_due(now)
        with self.db.write() as conn:
            replaced = lease.acquire(conn, now)
            if replaced is not None:
                log.warning("took over the lease of pid %d on %s", replaced.pid, replaced.host)
            # Executions this engine already runs (it ticked before it started) are not orphans.
            orphans = [e for e in history.running_executions(conn) if e.id not in self._running]
        self._heartbeat = now
        local = replaced is None or replaced.host == socket.gethostname()
        self._recover(snapshot, orphans, local)

    def stop(self) -> None:
        """Let an alert post in flight finish, and give the lease up."""
        self.notifier.close()
        if self._heartbeat is not None:
            with self.db.write() as conn:
                lease.release(conn)
            self._heartbeat = None

    def _recover(self, snapshot: Snapshot, orphans: list[Execution], local: bool) -> None:
        """Settle executions a stopped scheduler left ``running``, from what the executor kept.

        Ends known now (finished while no scheduler ran, or unknowable) are recorded by the next
        tick exactly as a live end is, releasing children, retries and alerts; adopted ones end
        through the executor later; those that never started are queued again as they were.
        """
        found = [
            dispatcher.orphan_of(e, snapshot.specs.get((e.file_path, e.task)), self.config)
            for e in orphans
        ]
        recovery = self.executor.recover(found, local)
        by_id = {e.id: e for e in orphans}
        for eid in [*recovery.adopted, *(o.execution_id for o in recovery.outcomes)]:
            self._running[eid] = by_id[eid]
        self._early.extend(recovery.outcomes)
        with self.db.write() as conn:
            history.delete_logs(conn, recovery.reparsed)  # the spool's full parse replaces them
            history.requeue(conn, recovery.unstarted)
        self.executor.release(recovery.unstarted)
        self._maybe_ready = self._maybe_ready or bool(recovery.unstarted)
        if orphans:
            log.warning(
                "left running by a stopped scheduler: %d ended, %d adopted, %d never started",
                len(recovery.outcomes),
                len(recovery.adopted),
                len(recovery.unstarted),
            )

    def run_forever(
        self, stop: threading.Event, on_tick: Callable[[TickReport], None] | None = None
    ) -> None:
        """Tick until ``stop`` is set; then stop the executor within the shutdown grace.

        ``on_tick`` sees every tick's report (the command line prints from it).
        """
        self.start()
        try:
            while not stop.is_set():
                report = self.tick(self.clock.now())
                if on_tick is not None:
                    on_tick(report)
                self._prune_if_due(self.clock.now())
                self.wait(self.next_wakeup(self.clock.now()))
        finally:
            self.shutdown()
            self.stop()

    def _prune_if_due(self, now: datetime) -> None:
        """Apply ``[retention] executions`` once a day, in its own short transactions."""
        keep = self.config.retention
        if keep is None or (self._next_prune is not None and now < self._next_prune):
            return
        self._next_prune = now + PRUNE_EVERY
        counts = retention.prune(self.db, now - keep)
        if counts.total:
            log.info(
                "pruned %d executions and %d file reports older than %s",
                counts.executions,
                counts.file_reports,
                keep,
            )

    def run_once(self, on_tick: Callable[[TickReport], None] | None = None) -> TickReport:
        """Fire what is due now, then run everything queued (children, retries) to the end."""
        self.start()
        total = TickReport()
        first = True
        try:
            while True:
                report = self.tick(self.clock.now(), fire_cron=first)
                if on_tick is not None:
                    on_tick(report)
                first = False
                _add(total, report)
                if self._idle() and self._queue_empty():
                    self.notifier.flush(self.clock.now())
                    return total
                self.wait(self.next_wakeup(self.clock.now()))
        finally:
            self.stop()

    def _idle(self) -> bool:
        """Nothing running and no outcome left uncollected (kept for the next tick if any)."""
        if self.executor.running():
            return False
        self._early.extend(self.executor.collect(0))
        return not self._early and not self._running

    def _queue_empty(self) -> bool:
        with self.db.read() as conn:
            return history.next_queued_time(conn) is None

    def shutdown(self) -> None:
        """Give running executions the grace period, then record them cancelled; each cancelled
        one is queued again as it was (``followup``), so the next scheduler runs it."""
        grace = self.config.shutdown_grace.total_seconds()
        outcomes, self._early = self._early + self.executor.shutdown(grace), []
        if not outcomes or self._snapshot is None:
            return
        self._backlog = True  # nothing may start now: released rows stay queued
        with self.db.write() as conn:
            self._record(conn, self._snapshot, outcomes, [], self.clock.now(), TickReport())
        self.executor.release(o.execution_id for o in outcomes)


def _needs_planning(
    spec: PhaseSpec, state: PhaseState | None, paused: bool, now: datetime, default_tz: str
) -> bool:
    if state is None or state.cron != planner.signature(spec, default_tz):
        return True
    if paused:
        return False
    return state.next_fire is None or state.next_fire <= now


def _runnable(snapshot: Snapshot, execution: Execution) -> bool:
    spec = snapshot.specs.get((execution.file_path, execution.task))
    return spec is not None and spec.runnable


def _error_row(spec: PhaseSpec, now: datetime, msg: str) -> NewExecution:
    return NewExecution(
        task_id="",
        file_path=spec.file_path,
        task=spec.task,
        task_time=None,
        trigger=history.Trigger.CRON,
        info=spec.template,
        meta={},
        not_before=now,
        status=Status.ERROR,
        msg=msg,
    )


def _log_row(line: LogLine) -> LogRow:
    return LogRow(line.execution_id, line.seq, line.ts, line.stream, line.line)


def _add(total: TickReport, report: TickReport) -> None:
    total.fired += report.fired
    total.finished += report.finished
    total.started += report.started
    total.failed += report.failed
    total.statuses.update(report.statuses)


__all__ = ["Engine", "TickReport"]
