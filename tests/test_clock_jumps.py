"""A wall clock that jumps: the loop sleeps on the monotonic clock in bounded slices.

The clock is the test's: its wall reading is stepped back or forward (an operator, NTP) while
its monotonic reading advances only as the engine sleeps. Nothing is timed; the tests count and
measure the slices the engine asked to sleep, and read what fired from the database.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.clock import SLICE_SECONDS, Every
from scheduler.config import Config
from scheduler.engine import Engine, TickReport
from scheduler.executors import LocalExecutor
from scheduler.planner import new_rows
from scheduler.store import history, lease
from scheduler.store.db import Database
from scheduler.store.history import Status, Trigger
from tests.conftest import ManualClock, WriteWorkflow

PY = sys.executable
T0 = datetime(2024, 1, 2, 12, 0, 30, tzinfo=UTC)


class SteppingClock(ManualClock):
    """A manual clock that records every sleep and runs ``on_sleep`` after each."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[], None] = lambda: None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)
        self.on_sleep()


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(T0)


@pytest.fixture
def make(db: Database, workflow_dir: Path, clock: SteppingClock):  # type: ignore[no-untyped-def]
    engines: list[Engine] = []

    def build(**settings: object) -> Engine:
        config = Config(workflows=workflow_dir, database=db.url, max_workers=2, **settings)  # type: ignore[arg-type]
        engine = Engine(config, db, LocalExecutor(2, clock.now), clock)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.executor.shutdown(0)


def cron_phase(task: str, cron: str, catchup: str = "latest") -> str:
    return f"""
        [[phase]]
        task = "{task}"
        rule = "cron={cron}&catchup={catchup}"
        template = "{PY} -c pass"
    """


def fired(db: Database, task: str) -> list[str]:
    with db.read() as conn:
        rows = history.list_executions(conn, task, None, 1000)
    # A fire still running when the loop stops is cancelled and queued again as what it was (a
    # cron row of the same task time): that is one fire, not two.
    return sorted({f"{r.task_time:%H:%M}" for r in rows if r.trigger is Trigger.CRON})


def queue_manual(engine: Engine, db: Database, task: str, now: datetime) -> None:
    spec = engine.catalog.get(task)
    assert spec is not None
    rows = new_rows(spec, now, {}, Trigger.MANUAL, now, engine.workflows)
    with db.write() as conn:
        history.insert_executions(conn, rows, now)


# -- the monotonic pace ------------------------------------------------------------------------


def test_every_is_paced_by_the_monotonic_reading() -> None:
    every = Every(timedelta(seconds=5))
    assert every.take(100.0)  # due at the first check
    assert not every.take(104.9)
    assert every.left(104.0) == pytest.approx(1.0)
    assert every.take(105.0)


def test_after_a_backward_step_the_next_wait_is_one_slice_not_the_step(
    make, write_workflow: WriteWorkflow, clock: SteppingClock
) -> None:
    # given an engine that ticked and planned its poll at 12:00:30
    write_workflow("w.toml", cron_phase("minutely", "* * * * *"))
    engine = make()
    engine.tick(clock.now())
    engine.next_wakeup(clock.now())
    # when the wall clock is set back two hours and the loop waits for what is next
    clock.step(timedelta(hours=-2))
    engine.wait(engine.next_wakeup(clock.now()))
    # then it slept at most one slice (today: the two hours)
    assert clock.sleeps and sum(clock.sleeps) <= SLICE_SECONDS


def test_stop_set_during_a_backward_stepped_wait_ends_it_within_one_slice(
    make, write_workflow: WriteWorkflow, clock: SteppingClock
) -> None:
    write_workflow("w.toml", cron_phase("minutely", "* * * * *"))
    engine = make()
    engine.tick(clock.now())
    stop = threading.Event()

    def step_back_then_stop() -> None:
        clock.step(timedelta(hours=-2))
        stop.set()  # SIGTERM arrives while the clock is two hours behind

    clock.on_sleep = step_back_then_stop
    engine.wait(clock.now() + timedelta(hours=1), stop)

    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] <= SLICE_SECONDS


def test_a_wait_ends_on_the_monotonic_clock_when_the_wall_clock_goes_back_meanwhile(
    make, write_workflow: WriteWorkflow, clock: SteppingClock
) -> None:
    write_workflow("w.toml", cron_phase("minutely", "* * * * *"))
    engine = make()
    engine.tick(clock.now())
    clock.on_sleep = lambda: clock.step(timedelta(hours=-2)) if len(clock.sleeps) == 1 else None

    engine.wait(clock.now() + timedelta(seconds=3))

    assert sum(clock.sleeps) == pytest.approx(3.0)
    assert max(clock.sleeps) <= SLICE_SECONDS


def test_the_lease_heartbeat_keeps_its_pace_after_a_backward_step(
    db: Database, make, write_workflow: WriteWorkflow, clock: SteppingClock
) -> None:
    write_workflow("w.toml", cron_phase("minutely", "* * * * *"))
    engine = make()
    engine.start()
    clock.step(timedelta(hours=-2))
    clock.advance(lease.HEARTBEAT_EVERY)

    engine.tick(clock.now())

    with db.read() as conn:
        holder = lease.current(conn)
    assert holder is not None and holder.heartbeat == clock.now()
    engine.stop()


def test_workflow_files_are_refreshed_on_pace_after_a_backward_step(
    make, write_workflow: WriteWorkflow, clock: SteppingClock
) -> None:
    write_workflow("w.toml", cron_phase("minutely", "* * * * *"))
    engine = make(refresh=timedelta(minutes=1))
    engine.tick(clock.now())
    clock.step(timedelta(hours=-2))
    write_workflow("added.toml", cron_phase("added", "* * * * *"))
    clock.advance(timedelta(minutes=1))

    engine.tick(clock.now())

    assert engine.catalog.get("added") is not None
    assert ("added.toml", "added") in engine.schedules.states


# -- the loop across a step ----------------------------------------------------------------------


def run_scripted(engine: Engine, script: Callable[[TickReport], bool]) -> None:
    """``run_forever`` with ``script`` seeing each tick; it returns True to stop the loop."""
    stop = threading.Event()

    def on_tick(report: TickReport) -> None:
        if script(report):
            stop.set()

    engine.run_forever(stop, on_tick=on_tick)


def test_backward_step_refires_nothing_runs_triggers_and_resumes_past_the_last_evaluation(
    db: Database, make, write_workflow: WriteWorkflow, clock: SteppingClock
) -> None:
    # given a minutely phase whose 12:01 fire ran, and a manual-only phase
    write_workflow("w.toml", cron_phase("minutely", "* * * * *") + cron_phase("adhoc", "0 0 1 1 *"))
    engine = make()
    stepped: list[datetime] = []

    def script(_report: TickReport) -> bool:
        now = clock.now()
        if not stepped and now >= T0 + timedelta(seconds=40):  # 12:01:10
            # when the wall clock is set back three minutes, and a trigger arrives
            clock.step(timedelta(minutes=-3))
            stepped.append(clock.now())
            queue_manual(engine, db, "adhoc", clock.now())
        return bool(stepped) and now >= datetime(2024, 1, 2, 12, 2, 5, tzinfo=UTC)

    run_scripted(engine, script)

    # then 11:59-12:01 do not fire again, 12:02 fires once the clock passes it, the loop never
    # slept more than a slice, and the trigger ran while the clock was still behind
    assert fired(db, "minutely") == ["12:01", "12:02"]
    assert max(clock.sleeps) <= SLICE_SECONDS
    with db.read() as conn:
        [manual] = history.list_executions(conn, "adhoc", None, 10)
    assert manual.status is Status.COMPLETE
    assert manual.started_at is not None
    assert manual.started_at < datetime(2024, 1, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        ("latest", ["17:00"]),
        ("all", ["13:00", "14:00", "15:00", "16:00", "17:00"]),
        ("none", []),
    ],
)
def test_forward_step_applies_the_catchup_policy_as_downtime_does(
    db: Database,
    make,
    write_workflow: WriteWorkflow,
    clock: SteppingClock,
    catchup: str,
    expected: list[str],
) -> None:
    # given an hourly phase seen at 12:00:30
    write_workflow("w.toml", cron_phase("hourly", "0 * * * *", catchup))
    engine = make()
    ticks: list[int] = []

    def script(_report: TickReport) -> bool:
        ticks.append(1)
        if len(ticks) == 2:
            clock.step(timedelta(hours=5, minutes=10))  # when the wall clock jumps to 17:10:30
        return len(ticks) == 4

    run_scripted(engine, script)

    # then the missed hours fire as the policy says, exactly as after five hours of downtime
    assert fired(db, "hourly") == expected


def test_the_holder_reports_its_tick_durations_with_the_heartbeat(
    db: Database, make, write_workflow: WriteWorkflow, clock: SteppingClock
) -> None:
    write_workflow("w.toml", cron_phase("hourly", "0 * * * *"))
    engine = make()
    seen: list[lease.TickStats | None] = []

    def script(_report: TickReport) -> bool:
        clock.advance(timedelta(seconds=2))  # past the heartbeat interval each tick
        with db.read() as conn:
            seen.append(lease.tick_stats(conn))
        return len(seen) == 3

    run_scripted(engine, script)
    reported = seen[-1]
    assert reported is not None and reported.total >= 1 and reported.seconds > 0
    assert reported.counts == sorted(reported.counts)  # cumulative, as Prometheus reads it
