"""The cron step: a fire prepared ahead of its time is what the tick at the fire would plan,
and it is dropped when what it was built from changes."""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scheduler import planner
from scheduler.config import Config
from scheduler.engine import PREPARE_AHEAD, Engine
from scheduler.executors import LocalExecutor
from scheduler.store import history
from scheduler.store.db import Database
from tests.conftest import ManualClock, WriteWorkflow
from tests.test_engine import all_rows, at

PY = sys.executable
HOURLY = f'[[phase]]\ntask = "h"\nrule = "cron=0 * * * *"\ntemplate = "{PY} -c pass {{yyyy}}"\n'
FIRE = at("2024-01-02T13:00:00")


@pytest.fixture
def engine(db: Database, workflow_dir: Path, clock: ManualClock, write_workflow: WriteWorkflow):
    write_workflow("h.toml", HOURLY)
    config = Config(workflows=workflow_dir, database=db.url, max_workers=0)
    engine = Engine(config, db, LocalExecutor(1, clock.now), clock)
    engine.tick(clock.now())  # the phase is seen: its schedule starts, next fire 13:00
    yield engine
    engine.executor.shutdown(0)


def prepare(engine: Engine) -> None:
    assert engine._snapshot is not None
    engine.schedules.prepare(engine._snapshot.cron, FIRE)


def counting_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = planner.rows_for_fire
    monkeypatch.setattr(
        planner, "rows_for_fire", lambda fire, *a: calls.append(fire.spec.task) or real(fire, *a)
    )
    return calls


def test_a_prepared_fire_is_stored_at_its_time_as_planned_then(
    engine: Engine, clock: ManualClock, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(engine)
    renders = counting_renders(monkeypatch)
    clock.current = FIRE + timedelta(milliseconds=3)
    report = engine.tick(clock.now())
    assert (report.fired, renders) == (1, [])
    [row] = all_rows(db)
    assert (row.task, row.task_time, row.trigger) == ("h", FIRE, history.Trigger.CRON)
    assert row.created_at == clock.now()  # stored now, though built 100 ms before
    assert row.info.endswith("pass 2024")
    with db.read() as conn:
        state = history.phase_states(conn)[("h.toml", "h")]
    assert state.next_fire == at("2024-01-02T14:00:00")


def test_a_prepared_fire_of_a_phase_paused_meanwhile_does_not_fire(
    engine: Engine, clock: ManualClock, db: Database
) -> None:
    prepare(engine)
    with db.write() as conn:
        conn.execute(history.phase_state.update().values(paused=1))
    clock.current = FIRE
    assert engine.tick(clock.now()).fired == 0
    assert all_rows(db) == []


def test_a_refresh_before_the_fire_drops_what_was_prepared(
    engine: Engine,
    clock: ManualClock,
    db: Database,
    write_workflow: WriteWorkflow,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepare(engine)
    write_workflow("h.toml", HOURLY.replace("{yyyy}", "changed"))
    engine.refresh_requested.set()
    renders = counting_renders(monkeypatch)
    clock.current = FIRE
    assert engine.tick(clock.now()).fired == 1
    assert renders == ["h"]
    assert all_rows(db)[0].info.endswith("pass changed")


def test_a_tick_after_the_next_fire_plans_anew_not_the_prepared_fire(
    engine: Engine, clock: ManualClock, db: Database
) -> None:
    prepare(engine)
    clock.current = FIRE + timedelta(hours=1)  # the daemon was frozen past 14:00 too
    engine.tick(clock.now())
    # as planning at 14:00 does: the missed 13:00 is not caught up (the default policy)
    assert [r.task_time for r in all_rows(db)] == [FIRE + timedelta(hours=1)]


def test_the_daemon_builds_a_fire_before_its_time_and_stores_it_at_its_time(
    engine: Engine, clock: ManualClock, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[datetime] = []
    real = planner.rows_for_fire
    monkeypatch.setattr(
        planner, "rows_for_fire", lambda fire, *a: built.append(clock.now()) or real(fire, *a)
    )
    stop = threading.Event()
    engine.run_forever(stop, on_tick=lambda report: stop.set() if report.fired else None)
    assert FIRE - PREPARE_AHEAD <= built[0] < FIRE
    [row] = all_rows(db)
    assert row.task_time == FIRE and row.created_at >= FIRE


def test_a_rehearsal_of_the_prepared_fire_leaves_nothing_and_the_fire_still_stores_it(
    engine: Engine, clock: ManualClock, db: Database
) -> None:
    prepare(engine)
    with db.read() as conn:
        states_before = history.phase_states(conn)
    with db.trial() as conn:
        engine.schedules.rehearse(conn)
        assert len(history.queued_ready(conn, FIRE, 10)) == 0  # inserted running, inside
        assert history.running_executions(conn) != []
    assert all_rows(db) == []
    with db.read() as conn:
        assert history.phase_states(conn) == states_before
    clock.current = FIRE
    assert engine.tick(clock.now()).fired == 1
    assert [r.task_time for r in all_rows(db)] == [FIRE]
