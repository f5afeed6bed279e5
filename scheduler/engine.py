"""The engine: ``tick(now)`` decides and acts once; ``run_forever`` and ``run_once`` loop it.

One tick, in order:

1. refresh workflow files when the refresh interval has passed; collect what ended;
2. in ONE write transaction, four named steps:
   - **plan** (``_plan``): the cron fires that are due, with their schedule state;
   - **record** (``_record``): every finished execution with its logs and alerts; it returns
     what the ends release (children, retries);
   - **claim** (``_claim``): insert the new rows; those that may start now start directly
     (inserted as running), the rest wait in the queue, and the oldest ready queued rows fill
     the workers still free (one ``UPDATE ... RETURNING``);
   - **launch** (``_launches``): build each claimed row's launch (a row that cannot even
     start ends as an error here);
   plus the output running executions printed so far and the user cancels;
3. after that transaction commits, let the executor release the recorded ends' receipts, hand
   it the cancels and the launches.

The tick's statements that run on every tick are plain SQL through the DB-API
(``store/dbapi.py``): building SQLAlchemy statements costs more than running them.

On start, what a stopped scheduler left running is settled from the executor's receipts
(``_recover``): true results are recorded as live ends are, live commands are adopted.

The database is the only source of truth about what is due and queued, so a restart resumes
exactly: retries are rows with ``not_before``, cron progress is ``phase_state.evaluated_until``.
The write transaction never spans a subprocess start.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection

from scheduler import dispatcher, filetrigger, notify, planner, sla, timing
from scheduler import graph as dag
from scheduler.catalog import Catalog
from scheduler.clock import SLICE_SECONDS, Clock, Every
from scheduler.config import Config
from scheduler.durations import format_duration
from scheduler.errors import StoreError, TomlflowError
from scheduler.executors import Executor, Launch, LogLine, Outcome
from scheduler.followup import FollowUp, after_end
from scheduler.retry import draw_jitter
from scheduler.schedules import Schedules
from scheduler.store import backup, file_reports, history, lease, retention, watched
from scheduler.store import db as store_db
from scheduler.store.db import Database
from scheduler.store.file_reports import FileReport, Source
from scheduler.store.history import Execution, Finish, LogRow, NewExecution, Status
from scheduler.store.workflows import file_rows
from scheduler.validation import PhaseSpec
from scheduler.watcher import FolderWatcher, Poll

log = logging.getLogger(__name__)

PhaseKey = tuple[str, str]
IDLE_POLL = timedelta(seconds=1)  # how often an idle daemon looks for rows queued by others
PRUNE_EVERY = timedelta(days=1)
WATCH_EVERY = timedelta(seconds=2)  # a scan of a few thousand files costs ~20 ms
CANCEL_POLL = 0.5  # seconds between looks for user cancels while something runs
FULL_RETRY_EVERY = timedelta(seconds=5)  # while the database or disk is full
PREPARE_AHEAD = timedelta(milliseconds=100)  # a cron fire's rows are built this much before it
WARM_AHEAD = timedelta(milliseconds=3)  # and the loop ticks once this much before it
END_LINGER = 0.0005  # seconds an end waits for others about to end, to be recorded with them
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


@dataclass(frozen=True)
class Overview:
    """What a daemon says when it starts (see ``Engine.overview``)."""

    phases: int
    phase_errors: int
    file_errors: int
    next_fire: tuple[datetime, str] | None  # when, and which task


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
        self.catalog = Catalog(db, config.workflows, clock, config.workers)
        self.rng = rng or random.Random()
        self.workflows = config.workflow_root
        self._snapshot: Snapshot | None = None
        self.schedules = Schedules(config.timezone, self.workflows)
        self._running: dict[int, Execution] = {}
        self._early: list[Outcome] = []
        self._not_before: list[datetime] = []  # heap: future not_before of rows we queued
        # Chores paced on the monotonic clock, so a wall-clock step never stretches or skips one.
        self._poll = Every(IDLE_POLL)
        self._heartbeat: Every | None = None  # set while this engine holds the lease
        self._prune = Every(PRUNE_EVERY)
        self._refresh = Every(config.refresh)
        self._scan = Every(WATCH_EVERY)
        self._db_file: store_db.FileIdentity | None = None  # the SQLite file we opened
        self._full = False  # the last write failed because the database or disk is full
        self._lost_to: lease.Holder | None = None  # who took the lease while we were away
        self.tick_stats = lease.TickStats()  # reported with the heartbeat, for /metrics
        self._states_stale = False  # a rolled-back tick left schedules ahead of the database
        # Workflow errors last reported, by (file, task); task "" for a file that does not load.
        self._problems: dict[PhaseKey, str] = {}
        self._told: set[tuple[PhaseKey, str]] = set()  # file errors the catalog just logged
        self._backlog = True  # whether the last claim may have left ready rows behind
        # Whether a queued row may be ready to start: when false, a tick skips the claim query.
        self._maybe_ready = True
        self.refresh_requested = threading.Event()
        # Posts on a thread of its own; idle (no thread) without a webhook.
        self.notifier = notify.AlertThread(notify.Notifier(db, config.alerts))
        self.watcher: FolderWatcher | None = None  # seeded from the database at its first poll
        self.deadlines = sla.DeadlineCheck(db, config.timezone)  # rule key sla
        self.backups = backup.PeriodicBackup(db, config.backup, config.backup_every)
        self._cancelling: set[int] = set()  # user cancels handed to the executor
        self._next_cancel_poll = 0.0  # monotonic

    # -- the tick ---------------------------------------------------------------------------

    def tick(self, now: datetime, *, fire_cron: bool = True) -> TickReport:
        """Decide and act once at ``now``: plan, record, claim, then launch after the commit."""
        snapshot = self._refresh_if_due(now)
        report = TickReport()
        outcomes, self._early = self._early + self.executor.collect(0), []
        started = self.executor.started()
        live = self.executor.lines()  # after collect: an ended execution's rest is its outcome's
        found = self._watch(snapshot, now)  # disk scan: outside the transaction
        with self._kept_on_rollback(outcomes), self.db.write() as conn:
            if self._heartbeat is not None and self._heartbeat.take(self.clock.monotonic()):
                lease.renew(conn, now, self.tick_stats)
            fires = self.schedules.plan(conn, snapshot.cron, now) if fire_cron else []
            if found is not None:
                self._record_watched(conn, found, now)
            released = self._record(conn, snapshot, outcomes, started, now, report)
            history.insert_logs(conn, [_log_row(x) for x in live])
            cancels = self._poll_cancels(conn)
            claimed = self._claim(conn, snapshot, fires, released, now, report)
            launches = self._launches(conn, snapshot, claimed, now, report)
        self.executor.release(o.execution_id for o in outcomes)  # only now that they are stored
        for execution_id in cancels:
            self._cancelling.add(execution_id)
            self.executor.cancel(execution_id, history.USER_CANCEL)
        if found is not None and self.watcher is not None:
            self.watcher.advance(found.poll)  # only now that its diff is stored
        for launch in launches:
            self.executor.submit(launch)
        report.started = len(launches)
        self.deadlines.poll(now, lambda: list(snapshot.specs.values()))  # sla.py; own transaction
        self.notifier.poll(now)  # hands due alerts to the alert thread; returns at once
        return report

    @contextmanager
    def _kept_on_rollback(self, outcomes: list[Outcome]) -> Iterator[None]:
        """When the tick's transaction fails it rolls back: keep the outcomes it collected and
        forget the claims it made, so the next try records and launches exactly that again."""
        running = dict(self._running)
        try:
            yield
        except BaseException:
            self._early = outcomes + self._early
            self._running = running
            self._maybe_ready = True
            self._states_stale = True  # the cron plan it saved in memory was not stored
            raise

    # -- the watched folder -------------------------------------------------------------------

    def _watch(self, snapshot: Snapshot, now: datetime) -> Watched | None:
        """Poll the watched folder (every WATCH_EVERY): rows and reports for the files that
        settled, and the poll, whose diff the tick stores; None when nothing changed."""
        root = self.config.watch
        if root is None or not self._scan.take(self.clock.monotonic()):
            return None
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
        """The phases, refreshed from the files when the refresh interval passed or SIGHUP asked.

        Raises WorkflowError when the first refresh fails (the workflow folder is missing):
        there is nothing to run. Later failures keep the phases last loaded.
        """
        due = self._refresh.take(self.clock.monotonic())
        if due or self.refresh_requested.is_set() or self._snapshot is None:
            self.refresh_requested.clear()
            try:
                result = self.catalog.refresh()
            except TomlflowError as exc:
                if self._snapshot is None:
                    raise
                log.error("refresh failed: %s", exc)  # the folder vanished: keep what we have
                result = None
            if (result is not None and result.keys) or self._snapshot is None:
                self._snapshot = Snapshot(self.catalog.phases())
                self._states_stale = True
                if result is not None:
                    self._told.update(((path, ""), error) for path, error in result.errors)
                if self._heartbeat is not None:  # a refused second scheduler says nothing
                    self._report_problems(self._snapshot)
        if self._states_stale:
            with self.db.read() as conn:
                self.schedules.load(history.phase_states(conn))
            self._states_stale = False
        return self._snapshot

    def _report_problems(self, snapshot: Snapshot) -> None:
        """Log each workflow file and phase error once when first seen and whenever it changes,
        and say when one is gone; the catalog itself logs the files it just failed to load."""
        with self.db.read() as conn:
            files = file_rows(conn)
        problems = {(key, ""): row.error for key, row in files.items() if row.error}
        problems.update(
            {
                (spec.file_path, spec.task): spec.status
                for spec in snapshot.specs.values()
                if not spec.runnable and spec.status
            }
        )
        for key, error in problems.items():
            if self._problems.get(key) != error and (key, error) not in self._told:
                log.error("workflow %s: %s", _where(key), error)
        for key in self._problems.keys() - problems.keys():
            log.warning("workflow %s: no longer in error", _where(key))
        self._problems, self._told = problems, set()

    # -- recording ends ---------------------------------------------------------------------

    def _record(
        self,
        conn: Connection,
        snapshot: Snapshot,
        outcomes: list[Outcome],
        started: list[tuple[int, int | None, datetime]],
        now: datetime,
        report: TickReport,
    ) -> list[NewExecution]:
        """Record ends with their logs and alerts; returns the rows they release (children,
        retries), for the claim to insert."""
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
        history.insert_alerts(conn, follow.alerts, now)
        report.finished = len(finishes)
        return follow.rows

    def _split_direct(
        self, snapshot: Snapshot, rows: list[NewExecution], now: datetime, free: int
    ) -> tuple[list[NewExecution], list[NewExecution]]:
        """New rows that may start at once, skipping the queue, and the rest.

        Only when no older row waits (the last claim emptied the queue) and no phase has a
        concurrency limit; otherwise everything goes through the queue, oldest first.
        """
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
        self,
        conn: Connection,
        snapshot: Snapshot,
        fires: list[NewExecution],
        released: list[NewExecution],
        now: datetime,
        report: TickReport,
    ) -> list[Execution]:
        """Insert the tick's new rows (cron fires, released children and retries) and claim
        what may start now, up to the free workers: new rows at once when nothing older waits,
        then the oldest ready rows of the queue."""
        free = self.config.max_workers - self.executor.running()
        direct, queued = self._split_direct(snapshot, fires + released, now, free)
        claimed = history.insert_claimed(conn, direct, now)
        inserted = history.insert_executions(conn, queued, now)
        # Only a cron fire recorded before is ever skipped: every other row is inserted.
        report.fired = len(fires) - (len(direct) - len(claimed)) - (len(queued) - inserted)
        if report.fired:
            report.fires.extend(fires)
        for row in queued:
            if row.not_before > now:
                heapq.heappush(self._not_before, row.not_before)
            elif row.status is Status.QUEUED:
                self._maybe_ready = self._backlog = True  # older than anything released later
        free -= len(claimed)
        if free > 0 and self._maybe_ready:
            claimed += self._claim_queued(conn, snapshot, free, now, report)
        return claimed

    def _claim_queued(
        self, conn: Connection, snapshot: Snapshot, free: int, now: datetime, report: TickReport
    ) -> list[Execution]:
        """Claim up to ``free`` ready rows of the queue, oldest first; a row whose phase can no
        longer run ends as an error. With per-phase limits, extra candidates are read so a
        phase at its limit does not starve the others."""
        if snapshot.limited:
            candidates = history.queued_ready(conn, now, free + _CANDIDATE_SLACK)
            per_phase = Counter((e.file_path, e.task) for e in self._running.values())
            chosen = dispatcher.select(
                (c for c in candidates if _runnable(snapshot, c)),
                snapshot.specs,
                dispatcher.Slots(free, per_phase),
            )
            history.mark_running(conn, [e.id for e in chosen], now)
            self._backlog = len(candidates) >= free + _CANDIDATE_SLACK
        else:
            candidates = history.claim_ready(conn, now, free)  # one statement: marked running
            chosen = [c for c in candidates if _runnable(snapshot, c)]
            self._backlog = len(candidates) >= free
        unrunnable = [c for c in candidates if not _runnable(snapshot, c)]
        if unrunnable:
            self._fail_unrunnable(conn, snapshot, unrunnable, now, report)
        self._maybe_ready = self._backlog
        return chosen

    def _launches(
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
        mono = self.clock.monotonic()
        if self._poll.take(mono):
            # Rows queued by others (the command line, another process) are found by this poll.
            with self.db.read() as conn:
                queued = history.next_queued_time(conn)
            if queued is not None and queued > now:
                heapq.heappush(self._not_before, queued)
            elif queued is not None:
                self._maybe_ready = True
        # The monotonic chores as wall times: the poll bounds every wait to IDLE_POLL.
        # Rounded up to the microsecond: rounded down, a wake a hair before the chore is due
        # would find it not due yet and wake again at once.
        chore = min(self._poll.left(mono), self._refresh.left(mono))
        candidates = [now + timedelta(microseconds=math.ceil(chore * 1e6))]
        if self._not_before:
            candidates.append(self._not_before[0])
        fire = self.schedules.next_fire(self._snapshot.cron) if self._snapshot else None
        if fire is not None:
            candidates.append(fire)
        return max(now, min(candidates))

    def _wait_for_next(self, stop: threading.Event) -> None:
        """Wait for what is due next. A cron fire is prepared PREPARE_AHEAD before its time, so
        the tick at the fire only stores and starts what was built (see schedules.py); then,
        WARM_AHEAD before it, its statements are rehearsed and the loop ticks once more: after
        a second asleep the tick's code and the pages it touches are cold, and a cold tick is
        several times slower than a warm one."""
        now = self.clock.now()
        wake = self.next_wakeup(now)
        snapshot = self._snapshot
        fire = self.schedules.next_fire(snapshot.cron) if snapshot is not None else None
        if snapshot is None or fire is None or fire != wake or wake - now <= PREPARE_AHEAD:
            self.wait(wake, stop)
            return
        self.wait(fire - PREPARE_AHEAD, stop)
        if not self._early and not stop.is_set():
            self.schedules.prepare(snapshot.cron, fire)
            self.wait(fire - WARM_AHEAD, stop)
            self._rehearse()

    def _rehearse(self) -> None:
        """On SQLite, run the prepared fire's statements in a transaction rolled back (see
        ``Schedules.rehearse``). Best effort: a failure here is met by the fire's own tick."""
        if not self.db.is_sqlite:
            return  # a server keeps its own pages; and its sequences would skip the ids used
        try:
            with self.db.trial() as conn:
                self.schedules.rehearse(conn)
        except StoreError as exc:
            log.debug("rehearsing the next fire failed: %s", exc)

    def wait(self, until: datetime, stop: threading.Event | None = None) -> None:
        """Sleep until the wall clock reaches ``until``, or as long on the monotonic clock,
        whichever comes first; wake early when an execution finishes or ``stop`` is set.

        Sleeps in slices of at most SLICE_SECONDS and re-reads the wall clock after each, so a
        wall clock stepped back never stretches the wait and ``stop`` is seen within a slice.
        Outcomes that arrive meanwhile are kept for the next tick to record.
        """
        deadline = self.clock.monotonic() + (until - self.clock.now()).total_seconds()
        while not self._early and not (stop is not None and stop.is_set()):
            left = min(
                (until - self.clock.now()).total_seconds(), deadline - self.clock.monotonic()
            )
            if left <= 0:
                return
            if self.executor.running():
                # One slice in the executor's collect, then back to a tick: while commands run,
                # ticks store their output as it comes (live logs) and see cancels.
                ended = self.executor.collect(min(left, SLICE_SECONDS))
                if ended and self.executor.running():
                    # Others still run, and often end a moment later: one short look more, so
                    # one tick records them together. A lone execution's end never waits.
                    ended += self.executor.collect(END_LINGER)
                self._early.extend(ended)
                return
            self._sleep_slice(min(left, SLICE_SECONDS))

    def _pause(self, seconds: float, stop: threading.Event | None) -> None:
        """Sleep ``seconds`` on the monotonic clock in slices, keeping outcomes that arrive
        (not waking for them: the caller cannot record them yet)."""
        deadline = self.clock.monotonic() + seconds
        while not (stop is not None and stop.is_set()):
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return
            self.clock.sleep(min(left, SLICE_SECONDS))
            self._early.extend(self.executor.collect(0))

    def _sleep_slice(self, seconds: float) -> None:
        """One bounded sleep while nothing runs (an outcome that ended since the tick is kept)."""
        self._early.extend(self.executor.collect(0))
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
        self._heartbeat = Every(lease.HEARTBEAT_EVERY)
        self._heartbeat.restart(self.clock.monotonic())
        local = replaced is None or replaced.host == lease.host_name()
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
        self,
        stop: threading.Event,
        on_tick: Callable[[TickReport], None] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        """Tick until ``stop`` is set; then stop the executor within the shutdown grace.

        ``on_start`` runs once the lease is held (the command line prints its banner there);
        ``on_tick`` sees every tick's report. Raises DatabaseGone when the SQLite file is deleted
        or replaced under the daemon; nothing more is written then.
        """
        self._begin()
        try:
            if on_start is not None:
                on_start()
            while not stop.is_set():
                report = self._step(stop, fire_cron=True)
                if report is None:
                    continue
                if on_tick is not None:
                    on_tick(report)
                self.backups.poll(self.clock.now())  # [scheduler] backup, on its own thread
                self._wait_for_next(stop)
        finally:
            self._end_run()

    def run_once(
        self,
        on_tick: Callable[[TickReport], None] | None = None,
        stop: threading.Event | None = None,
    ) -> TickReport:
        """Fire what is due now, then run everything queued (children, retries) to the end.

        When ``stop`` is set (SIGINT, SIGTERM) it ends as the daemon does: what runs gets the
        shutdown grace, then is recorded cancelled and queued again.
        """
        self._begin()
        total = TickReport()
        try:
            done = self._passes(total, on_tick, stop)
        except DatabaseGone:
            self._end_run()  # writes nothing to a database that is not ours any more
            raise
        except BaseException:
            self.stop()
            raise
        if done:
            self.notifier.flush(self.clock.now())
            self.stop()
        else:
            self._end_run()
        return total

    def _passes(
        self,
        total: TickReport,
        on_tick: Callable[[TickReport], None] | None,
        stop: threading.Event | None,
    ) -> bool:
        """Tick, adding to ``total``, until nothing runs or waits (True) or ``stop`` is set."""
        first = True
        while stop is None or not stop.is_set():
            report = self._step(stop, fire_cron=first, prune=False)
            if report is None:
                continue
            if on_tick is not None:
                on_tick(report)
            first = False
            _add(total, report)
            if self._idle() and self._queue_empty():
                return True
            self.wait(self.next_wakeup(self.clock.now()), stop)
        return False

    def overview(self, now: datetime) -> Overview:
        """What a started engine has loaded: phases, how many have errors, files that do not
        load, and the next cron fire (a phase not planned yet counts from ``now``)."""
        snapshot = self._refresh_if_due(now)
        upcoming: list[tuple[datetime, str]] = []
        for spec in snapshot.cron:
            assert spec.rule is not None and spec.rule.cron is not None
            state = self.schedules.states.get((spec.file_path, spec.task))
            if state is not None and state.paused:
                continue
            tz = self.config.timezone
            planned = state is not None and state.cron == planner.signature(spec, tz)
            if planned and state is not None and state.next_fire is not None:
                upcoming.append((state.next_fire, spec.task))
            elif not planned:
                zone = planner.zone_of(spec, tz)
                upcoming.append((timing.next_fire(spec.rule.cron, zone, now), spec.task))
        return Overview(
            phases=len(snapshot.specs),
            phase_errors=sum(1 for key in self._problems if key[1]),
            file_errors=sum(1 for key in self._problems if not key[1]),
            next_fire=min(upcoming) if upcoming else None,
        )

    def _begin(self) -> None:
        """Start (lease, recovery) and note which database file this run writes to."""
        self.start()
        self._db_file = self.db.file_identity()
        if self._snapshot is not None:
            self._report_problems(self._snapshot)

    def _step(
        self, stop: threading.Event | None, *, fire_cron: bool, prune: bool = True
    ) -> TickReport | None:
        """The daily prune (when due) and one tick; None when the database or disk is full, after
        waiting FULL_RETRY_EVERY: the tick wrote and launched nothing, and lost nothing collected.

        Raises DatabaseGone when the database file is no longer the one this run opened.
        """
        self._check_database_file()
        try:
            if prune:
                self._prune_if_due(self.clock.now())
            started = time.perf_counter()
            report = self.tick(self.clock.now(), fire_cron=fire_cron)
            self.tick_stats.observe(time.perf_counter() - started)
        except lease.LeaseHeld as exc:  # frozen or cut off meanwhile: a standby took over
            self._lost_to = exc.holder
            raise LeaseLost(exc.holder) from None
        except StoreError as exc:
            if not store_db.is_full(exc):
                raise
            if not self._full:
                wait = FULL_RETRY_EVERY.total_seconds()
                log.error("database or disk is full: not launching; retrying every %.0fs", wait)
            self._full = True
            self._pause(FULL_RETRY_EVERY.total_seconds(), stop)
            return None
        if self._full:
            log.warning("the database takes writes again: launching resumes")
            self._full = False
        return report

    def _check_database_file(self) -> None:
        """Raise DatabaseGone if the SQLite file was deleted or replaced. One stat, before every
        tick: a tick after the swap could open a new connection on a stranger's file."""
        if self._db_file is not None and not self._db_file.still_there():
            raise DatabaseGone(self._db_file.path)

    def _end_run(self) -> None:
        """Stop the executor within the grace, saying what it waits for; record what it cancels
        and give the lease up, unless the database file is gone (then write nothing)."""
        running = sorted(self._running.values(), key=lambda e: e.id)
        grace = self.config.shutdown_grace
        if running and self.executor.running():
            names = ", ".join(f"{e.task} #{e.id}" for e in running[:5])
            more = f" and {len(running) - 5} more" if len(running) > 5 else ""
            log.warning(
                "stopping: waiting up to %s for %d running executions (%s%s); "
                "then they are cancelled and queued again",
                format_duration(grace),
                len(running),
                names,
                more,
            )
        if self._db_file is not None and not self._db_file.still_there():
            self.executor.shutdown(grace.total_seconds())
            self.notifier.close()
            return
        if self._lost_to is not None:
            self._step_down(self._lost_to)
            return
        try:
            self.shutdown()
        finally:
            self.stop()

    def _step_down(self, holder: lease.Holder) -> None:
        """Leave the database to the scheduler that took the lease, writing nothing more.

        What this one runs is the new holder's now: on this host it adopts them from the spool,
        so they are left running; on another host it has closed them (outcome unknowable) and
        retries them, so they are killed here rather than run twice at once.
        """
        if holder.host != lease.host_name():
            self.executor.shutdown(0)
        self.notifier.close()
        self._heartbeat = None

    def _prune_if_due(self, now: datetime) -> None:
        """Apply ``[retention] executions`` once a day, in its own short transactions."""
        keep = self.config.retention
        if keep is None or not self._prune.take(self.clock.monotonic()):
            return
        counts = retention.prune(self.db, now - keep)
        if counts.total:
            log.info(
                "pruned %d executions and %d file reports older than %s",
                counts.executions,
                counts.file_reports,
                keep,
            )

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
            now = self.clock.now()
            released = self._record(conn, self._snapshot, outcomes, [], now, TickReport())
            history.insert_executions(conn, released, now)
        self.executor.release(o.execution_id for o in outcomes)


class LeaseLost(TomlflowError):
    """Another scheduler took the lease while this one was frozen or cut off: it steps down."""

    def __init__(self, holder: lease.Holder) -> None:
        self.holder = holder
        super().__init__(
            f"another scheduler took over this database (pid {holder.pid} on {holder.host}) "
            "while this one was not heard from: stepping down, writing nothing more"
        )


class DatabaseGone(TomlflowError):
    """The SQLite database file was deleted or replaced while a scheduler ran on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"database file {path} was deleted or replaced while the scheduler ran: stopping "
            "(nothing more is written to it)"
        )


def _where(key: PhaseKey) -> str:
    """``file`` for a file's own error, ``file [task]`` for a phase's."""
    return f"{key[0]} [{key[1]}]" if key[1] else key[0]


def _runnable(snapshot: Snapshot, execution: Execution) -> bool:
    spec = snapshot.specs.get((execution.file_path, execution.task))
    return spec is not None and spec.runnable


def _log_row(line: LogLine) -> LogRow:
    return LogRow(line.execution_id, line.seq, line.ts, line.stream, line.line)


def _add(total: TickReport, report: TickReport) -> None:
    total.fired += report.fired
    total.finished += report.finished
    total.started += report.started
    total.failed += report.failed
    total.statuses.update(report.statuses)


__all__ = ["Engine", "TickReport"]
