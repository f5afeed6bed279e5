"""An outcome outlives the scheduler: what a restarted engine makes of what a dead one left.

A dead scheduler is played by ``Dying``: an executor that starts each launch exactly as the local
executor does (the real supervisor, the real spool) and then never looks at it again. A second
engine with a real ``LocalExecutor`` on the same database and spool then starts, as a
restarted daemon would. Commands are real processes; only the clock is the test's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.config import Config, WorkerConfig
from scheduler.engine import Engine
from scheduler.executors import (
    Launch,
    LocalExecutor,
    LogLine,
    Orphan,
    Outcome,
    Recovery,
    Result,
    Started,
)
from scheduler.executors.command import UNKNOWN_DEAD, spawn
from scheduler.executors.inprocess import IN_PROCESS_LOST
from scheduler.executors.spool import Spool
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Execution, Status
from scheduler.store.schema import execution_logs, executions
from tests import conftest
from tests.conftest import ManualClock, WriteWorkflow

PY = sys.executable
NOON = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)


class Dying:
    """Starts launches through the real supervisor, then dies: never collects an outcome."""

    def __init__(self, spool: Spool, now: Callable[[], datetime]) -> None:
        self.spool = spool
        self.now = now
        self.procs: list[subprocess.Popen[bytes]] = []
        self._started: list[Started] = []

    def submit(self, launch: Launch) -> None:
        proc = spawn(launch, self.spool)
        self.procs.append(proc)
        self._started.append((launch.execution_id, proc.pid, self.now()))

    def started(self) -> list[Started]:
        started, self._started = self._started, []
        return started

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        return []

    def running(self) -> int:
        return 0

    def lines(self) -> list[LogLine]:
        return []

    def cancel(self, execution_id: int, reason: str) -> None:
        pass

    def recover(self, orphans: Sequence[Orphan], local: bool) -> Recovery:
        return Recovery()

    def release(self, execution_ids: Iterable[int]) -> None:
        pass

    def shutdown(self, grace: float) -> list[Outcome]:
        return []


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def config(db: Database, workflow_dir: Path, spool_dir: Path) -> Config:
    return Config(
        workflows=workflow_dir,
        database=db.url,
        max_workers=4,
        spool=spool_dir,
        shutdown_grace=timedelta(0),
    )


@pytest.fixture
def dead(config: Config, db: Database, clock: ManualClock) -> Iterator[Dying]:
    """The engine that dies: it fires ``job`` at 13:00 and starts it, then is gone."""
    dying = Dying(Spool(config.spool_dir), clock.now)
    yield dying
    for proc in dying.procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture
def restarted(config: Config, db: Database, clock: ManualClock) -> Iterator[Callable[[], Engine]]:
    engines: list[Engine] = []

    def build() -> Engine:
        executor = LocalExecutor(config.max_workers, clock.now, spool=config.spool_dir)
        engine = Engine(config, db, executor, clock)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.executor.shutdown(0)


def run_and_die(dying: Dying, config: Config, db: Database, clock: ManualClock) -> Execution:
    """The first scheduler sees the phases, fires ``job`` at 13:00, starts it, notes its pid."""
    engine = Engine(config, db, dying, clock)
    engine.tick(clock.now())
    clock.current = NOON + timedelta(hours=1)
    engine.tick(clock.now())
    engine.tick(clock.now())  # records the pid, as the tick after a start does
    [row] = [r for r in rows(db) if r.task == "job"]
    assert (row.status, row.pid is not None) == (Status.RUNNING, True)
    return row


def rows(db: Database) -> list[Execution]:
    with db.read() as conn:
        found = conn.execute(select(executions).order_by(executions.c.id))
        return [Execution.from_row(r) for r in found]


def log_lines(db: Database, execution_id: int) -> list[str]:
    with db.read() as conn:
        query = (
            select(execution_logs.c.line)
            .where(execution_logs.c.execution_id == execution_id)
            .order_by(execution_logs.c.seq)
        )
        return list(conn.execute(query).scalars())


def alive(pid: int | None) -> bool:
    """True while ``pid`` exists and is not a zombie awaiting its reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


wait_for = partial(conftest.wait_for, timeout=10.0, poll=0.02)


def run_to_end(engine: Engine, db: Database, clock: ManualClock) -> None:
    """Tick (waiting as the loop does) until nothing runs and nothing is queued."""
    end = time.monotonic() + 15
    while True:
        engine.tick(clock.now())
        statuses = {r.status for r in rows(db)}
        if not statuses & {Status.RUNNING, Status.QUEUED}:
            return
        assert time.monotonic() < end, "executions still running or queued"
        engine.wait(clock.now() + timedelta(milliseconds=200))


def job(template: str, rule: str = "", retry: int = 1) -> str:
    extra = f"&{rule}" if rule else ""
    return f"""
        [[phase]]
        task = "job"
        rule = "cron=0 * * * *{extra}"
        retry = {retry}
        template = "{template}"

        [[phase]]
        task = "child"
        depends_on = "job"
        template = "true"
    """


def test_finished_while_dead_is_recorded_with_its_true_outcome_and_releases_its_child(
    write_workflow: WriteWorkflow,
    dead: Dying,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    # Given a command that a scheduler started and that then finished while none ran
    write_workflow("w.toml", job("sh -c 'echo out; echo err >&2; exit 0'"))
    row = run_and_die(dead, config, db, clock)
    receipt = Path(config.spool_dir) / f"{row.id}.rc"
    wait_for(receipt.exists)
    dead.procs[0].wait()
    ended = datetime.fromtimestamp(receipt.stat().st_mtime, UTC)

    # When a scheduler starts again
    engine = restarted()
    engine.start()
    run_to_end(engine, db, clock)

    # Then the run is complete (not an error), with its output and end time, and its child ran
    first, child = rows(db)
    assert (first.status, first.exit_code, first.msg) == (Status.COMPLETE, 0, "")
    assert (first.started_at, first.ended_at) == (row.started_at, ended)
    assert sorted(log_lines(db, first.id)) == ["err", "out"]
    assert (child.task, child.status, child.parent_execution_id) == (
        "child",
        Status.COMPLETE,
        first.id,
    )
    wait_for(lambda: not any(Path(config.spool_dir).glob(f"{first.id}.*")))  # released


def test_failed_while_dead_applies_the_retry_policy_once(
    write_workflow: WriteWorkflow,
    dead: Dying,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    write_workflow("w.toml", job("sh -c 'echo broken >&2; exit 3'", retry=0))
    row = run_and_die(dead, config, db, clock)
    wait_for((Path(config.spool_dir) / f"{row.id}.rc").exists)

    engine = restarted()
    engine.start()
    run_to_end(engine, db, clock)

    [first] = rows(db)
    assert (first.status, first.exit_code, first.msg) == (Status.ERROR, 3, "exit code 3: broken")


def test_a_running_command_is_adopted_and_completes_after_the_restart(
    write_workflow: WriteWorkflow,
    dead: Dying,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
    tmp_path: Path,
) -> None:
    go = tmp_path / "go"
    write_workflow("w.toml", job(f"sh -c 'echo waiting; while [ ! -e {go} ]; do sleep 0.02; done'"))
    row = run_and_die(dead, config, db, clock)
    wait_for(lambda: (Path(config.spool_dir) / f"{row.id}.out").read_text() == "waiting\n")

    engine = restarted()
    engine.start()
    engine.tick(clock.now())
    assert [(r.id, r.status) for r in rows(db)] == [(row.id, Status.RUNNING)]
    assert engine.executor.running() == 1
    go.touch()
    run_to_end(engine, db, clock)

    first, child = rows(db)
    assert (first.status, first.exit_code, first.pid) == (Status.COMPLETE, 0, row.pid)
    assert log_lines(db, first.id) == ["waiting"]
    assert child.status is Status.COMPLETE


def test_an_adopted_command_is_killed_when_its_timeout_expires(
    write_workflow: WriteWorkflow,
    dead: Dying,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    # Given a command with a 2 s timeout started 1.5 s before its scheduler died
    write_workflow("w.toml", job("sleep 30", rule="timeout=2s", retry=0))
    row = run_and_die(dead, config, db, clock)
    clock.advance(timedelta(milliseconds=1500))

    # When a scheduler adopts it, its timeout is still enforced (from the row's start)
    engine = restarted()
    engine.start()
    run_to_end(engine, db, clock)

    [first] = rows(db)
    assert (first.status, first.msg) == (Status.ERROR, "timeout after 2s")
    assert first.ended_at is not None
    assert not alive(row.pid)


def test_an_outcome_that_left_no_receipt_is_an_error_that_says_so(
    write_workflow: WriteWorkflow,
    dead: Dying,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    # Given a command whose supervisor was killed outright (no exit status was written)
    write_workflow("w.toml", job("sh -c 'echo started; sleep 30'", retry=1))
    row = run_and_die(dead, config, db, clock)
    wait_for(lambda: (Path(config.spool_dir) / f"{row.id}.out").read_text() == "started\n")
    os.killpg(row.pid, 9)
    dead.procs[0].wait()

    engine = restarted()
    engine.start()
    engine.tick(clock.now())

    first, retry = rows(db)
    assert (first.status, first.msg) == (Status.ERROR, UNKNOWN_DEAD)
    assert log_lines(db, first.id) == ["started", UNKNOWN_DEAD]
    assert (retry.attempt, retry.trigger) == (2, history.Trigger.RETRY)  # retry policy applies


def test_a_run_whose_command_never_started_is_queued_again_as_it_was(
    write_workflow: WriteWorkflow,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    # Given a row marked running by a scheduler that died before it started the command
    write_workflow("w.toml", job("true"))
    now = clock.now()
    new = history.NewExecution("t", "w.toml", "job", now, history.Trigger.CRON, "true", {}, now)
    with db.write() as conn:
        [queued] = history.insert_claimed(conn, [new], now)

    again = restarted()
    again.start()
    run_to_end(again, db, clock)

    first, child = rows(db)
    assert (first.id, first.status, first.attempt, first.trigger) == (  # one row: run once
        queued.id,
        Status.COMPLETE,
        1,
        history.Trigger.CRON,
    )
    assert child.status is Status.COMPLETE


def test_a_python_worker_left_running_is_an_error_naming_why(
    write_workflow: WriteWorkflow,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    write_workflow("w.toml", job("true", retry=0).replace('task = "job"', 'task = "py"'))
    with db.write() as conn:
        now = clock.now()
        history.insert_claimed(
            conn,
            [history.NewExecution("t", "w.toml", "py", now, history.Trigger.MANUAL, "", {}, now)],
            now,
        )
    config = replace(config, workers={"py": WorkerConfig(python="os:getpid")})
    engine = Engine(config, db, LocalExecutor(1, clock.now, spool=config.spool_dir), clock)
    try:
        engine.start()
        engine.tick(clock.now())
    finally:
        engine.executor.shutdown(0)

    [row] = rows(db)
    assert (row.status, row.msg) == (Status.ERROR, IN_PROCESS_LOST)


def test_a_shutdown_requeues_what_ran_as_it_was_and_spends_no_retry(
    write_workflow: WriteWorkflow,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    # Given a cron run of a phase with no retries, running when the scheduler shuts down
    write_workflow("w.toml", job("sleep 30", retry=0))
    engine = restarted()
    engine.tick(clock.now())
    clock.current = NOON + timedelta(hours=1)
    engine.tick(clock.now())
    wait_for(lambda: engine.executor.started() or rows(db)[0].pid)

    engine.shutdown()

    # Then it is cancelled and queued again as what it was: cron, attempt 1, same chain
    cancelled, again = rows(db)
    assert cancelled.status is Status.CANCELLED
    assert (again.status, again.trigger, again.attempt) == (
        Status.QUEUED,
        history.Trigger.CRON,
        1,
    )
    assert (again.task_id, again.task_time, again.meta) == (
        cancelled.task_id,
        cancelled.task_time,
        cancelled.meta,
    )


def test_an_adopted_command_can_be_cancelled_by_a_user(
    write_workflow: WriteWorkflow,
    dead: Dying,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    write_workflow("w.toml", job("sleep 30"))
    row = run_and_die(dead, config, db, clock)
    engine = restarted()
    engine.start()
    with db.write() as conn:
        assert history.request_cancel(conn, row.id, clock.now())[0] is history.Cancel.REQUESTED

    run_to_end(engine, db, clock)

    [first] = rows(db)  # no retry, no child, not queued again
    assert (first.status, first.msg) == (Status.CANCELLED, history.USER_CANCEL)
    assert not alive(row.pid)


def test_a_scheduler_that_died_mid_shutdown_leaves_its_stop_reason_and_the_run_is_requeued(
    write_workflow: WriteWorkflow,
    dead: Dying,
    restarted,
    config: Config,
    db: Database,
    clock: ManualClock,
) -> None:
    # Given a shutdown that wrote its reason and killed the command, then died before recording
    write_workflow("w.toml", job("sleep 30", retry=0))
    row = run_and_die(dead, config, db, clock)
    reason = "executor shut down: still running after 0s"
    Spool(config.spool_dir).write_stop(row.id, Result.CANCELLED, reason)
    os.killpg(row.pid, 9)
    dead.procs[0].wait()

    # When a scheduler starts again
    engine = restarted()
    engine.start()
    engine.tick(clock.now())

    # Then the stop's reason is the outcome, and the run is queued again as what it was
    first, again = rows(db)
    assert (first.status, first.msg) == (Status.CANCELLED, reason)
    assert (again.trigger, again.attempt, again.task_id) == (
        history.Trigger.CRON,
        1,
        first.task_id,
    )
    assert again.status in (Status.QUEUED, Status.RUNNING)  # and this scheduler starts it
