"""Deadlines (rule key sla): the pure decision, the once-only record, and the engine's hook."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler import sla
from scheduler.config import AlertsConfig
from scheduler.errors import RuleError
from scheduler.loader import RawPhase
from scheduler.notify import Notifier
from scheduler.rules import parse_rule
from scheduler.store import deadlines, history
from scheduler.store.db import Database
from scheduler.store.history import Finish, NewExecution, PhaseState, Status, Trigger
from scheduler.store.schema import alerts
from scheduler.validation import PhaseSpec, validate_file
from tests.conftest import ManualClock, WriteWorkflow
from tests.test_engine import make_engine

T0 = datetime(2024, 1, 2, 0, 0, tzinfo=UTC)  # the phase is first seen here
H = timedelta(hours=1)


def spec(rule: str = "cron=0 * * * *&sla=2h", task: str = "etl") -> PhaseSpec:
    (phase,) = validate_file("p.toml", [RawPhase(task=task, rule=rule, template="true")])
    return phase


def state(phase: PhaseSpec, paused: bool = False) -> PhaseState:
    return PhaseState(phase.file_path, phase.task, T0, T0, "", None, paused)


# -- the rule key -------------------------------------------------------------------------------


def test_sla_is_a_positive_duration() -> None:
    assert parse_rule("cron=0 5 * * *&sla=1h30m").sla == timedelta(hours=1, minutes=30)
    assert parse_rule("cron=0 5 * * *").sla is None
    for bad in ("soon", "-2h", "0s"):
        with pytest.raises(RuleError, match=f"invalid duration: sla={bad}"):
            parse_rule(f"cron=0 5 * * *&sla={bad}")


# -- the pure decision --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checked", "now", "expected"),
    [
        # checked since first seen: every hour whose deadline (t + 2h) is a minute old
        (T0, T0 + 5 * H, [T0 + H, T0 + 2 * H]),
        (T0, T0 + 3 * H + timedelta(seconds=59), []),  # 01:00's deadline is not settled yet
        (T0, T0 + 3 * H + timedelta(minutes=1), [T0 + H]),
        (T0 - 9 * H, T0 + 3 * H + timedelta(minutes=1), [T0 + H]),  # nothing before first seen
        # later checks: only deadlines after the one checked until
        (T0 + 4 * H, T0 + 5 * H + timedelta(minutes=1), [T0 + 3 * H]),
        (T0 + 5 * H, T0 + 5 * H + timedelta(minutes=2), []),
    ],
)
def test_due_are_the_times_whose_deadline_passed_since_the_last_check(
    checked: datetime, now: datetime, expected: list[datetime]
) -> None:
    phase = spec()
    assert sla.due(phase, state(phase), checked, now, "UTC") == expected


def test_due_after_long_downtime_is_bounded() -> None:
    phase = spec("cron=* * * * *&sla=1m")
    now = T0 + timedelta(days=30)
    times = sla.due(phase, state(phase), T0, now, "UTC")
    assert len(times) == sla.CAP
    assert times[-1] == now - sla.SETTLE - timedelta(minutes=1)


def test_due_follows_the_zone_of_the_cron_across_dst() -> None:
    # given a daily 02:30 Berlin phase on the spring-forward night (02:30 does not exist)
    phase = spec("cron=30 2 * * *&tz=Europe/Berlin&sla=1h")
    first = datetime(2024, 3, 30, 12, tzinfo=UTC)
    seen = PhaseState("p.toml", "etl", first, first, "", None, False)
    times = sla.due(phase, seen, first, datetime(2024, 4, 1, 12, tzinfo=UTC), "UTC")
    # then it is judged once that night, at the first valid instant after the gap (03:00 CEST)
    assert times == [
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC),
        datetime(2024, 4, 1, 0, 30, tzinfo=UTC),
    ]


def test_missed_unless_complete_by_the_deadline() -> None:
    phase = spec("cron=0 * * * *&offset=-1h&sla=2h")
    times = [T0 + H, T0 + 2 * H, T0 + 3 * H]
    completed = {
        T0: T0 + 2 * H,  # the 01:00 run (task time 00:00) completed 1h after: on time
        T0 + H: T0 + 4 * H + timedelta(seconds=1),  # the 02:00 run completed a second late
    }
    misses = sla.missed(phase, times, completed)
    assert [m.scheduled for m in misses] == [T0 + 2 * H, T0 + 3 * H]
    assert misses[0].message == "missed deadline: etl for 2024-01-02T01:00:00.000000Z (sla 2h)"


# -- recording: once per scheduled time, also after downtime -----------------------------------


def run(
    db: Database, phase: PhaseSpec, scheduled: datetime, status: Status, ended: datetime
) -> None:
    row = NewExecution("c", phase.file_path, phase.task, scheduled, Trigger.CRON, "", {}, scheduled)
    with db.write() as conn:
        (claimed,) = history.insert_claimed(conn, [row], scheduled)
        history.record_finishes(conn, [Finish(claimed.id, status, "", 0, scheduled, ended)])


def sla_alerts(db: Database) -> list[str]:
    with db.read() as conn:
        return [msg for *_, msg in deadlines.sla_alerts(conn)]


def watching(db: Database, phase: PhaseSpec, paused: bool = False) -> None:
    """The phase, first seen at T0, with a scheduler's first check (which starts the watch)."""
    with db.write() as conn:
        history.save_phase_states(conn, [state(phase)])
    assert sla.DeadlineCheck(db, "UTC").poll(T0 + sla.SETTLE, lambda: [phase]) == []
    if paused:
        with db.write() as conn:
            conn.execute(history.phase_state.update().values(paused=1))


def test_deadlines_missed_while_down_are_alerted_once_on_start(db: Database) -> None:
    # given a watched phase whose 01:00 run completed in time and 02:00 run failed
    phase = spec()
    watching(db, phase)
    run(db, phase, T0 + H, Status.COMPLETE, T0 + H + timedelta(minutes=5))
    run(db, phase, T0 + 2 * H, Status.ERROR, T0 + 2 * H + timedelta(minutes=5))
    # when a scheduler starts at 06:00 (every deadline passed while none ran)
    misses = sla.DeadlineCheck(db, "UTC").poll(T0 + 6 * H, lambda: [phase])
    # then one alert per missed scheduled time: 02:00 failed, 03:00 never ran
    assert [m.scheduled for m in misses] == [T0 + 2 * H, T0 + 3 * H]
    assert sla_alerts(db) == [
        "missed deadline: etl for 2024-01-02T02:00:00.000000Z (sla 2h)",
        "missed deadline: etl for 2024-01-02T03:00:00.000000Z (sla 2h)",
    ]
    # and a restart judges only what passed since
    again = sla.DeadlineCheck(db, "UTC").poll(T0 + 7 * H, lambda: [phase])
    assert [m.scheduled for m in again] == [T0 + 4 * H]
    assert len(sla_alerts(db)) == 3


def test_the_unique_key_keeps_one_alert_per_task_time(db: Database) -> None:
    # given two checks that judged the same deadline (say, racing after a restore)
    miss = sla.Miss("p.toml", "etl", T0 + H, T0 + H, timedelta(hours=2))
    with db.write() as conn:
        assert deadlines.record(conn, [miss.alert()], {}, T0 + 4 * H) == 1
    with db.write() as conn:
        assert deadlines.record(conn, [miss.alert()], {}, T0 + 5 * H) == 0
    assert len(sla_alerts(db)) == 1


def test_adding_sla_to_an_old_phase_raises_nothing_about_its_past(db: Database) -> None:
    phase = spec()
    with db.write() as conn:
        history.save_phase_states(conn, [state(phase)])  # seen (and failing) since T0
    assert sla.DeadlineCheck(db, "UTC").poll(T0 + 30 * H, lambda: [phase]) == []
    later = sla.DeadlineCheck(db, "UTC").poll(T0 + 31 * H, lambda: [phase])
    assert [m.scheduled for m in later] == [T0 + 28 * H]


def test_a_paused_phase_is_not_judged_and_resuming_raises_nothing_for_the_pause(
    db: Database,
) -> None:
    phase = spec()
    watching(db, phase, paused=True)
    assert sla.DeadlineCheck(db, "UTC").poll(T0 + 6 * H, lambda: [phase]) == []
    with db.write() as conn:
        conn.execute(history.phase_state.update().values(paused=0))
    resumed = sla.DeadlineCheck(db, "UTC").poll(T0 + 7 * H, lambda: [phase])
    assert [m.scheduled for m in resumed] == [T0 + 4 * H]


def test_checks_run_every_check_interval(db: Database) -> None:
    phase = spec()
    watching(db, phase)
    check = sla.DeadlineCheck(db, "UTC")
    assert len(check.poll(T0 + 4 * H, lambda: [phase])) == 1
    calls: list[int] = []

    def phases() -> list[PhaseSpec]:
        calls.append(1)
        return [phase]

    assert check.poll(T0 + 4 * H + timedelta(seconds=10), phases) == []
    assert calls == []  # within CHECK_EVERY of the last: not even the phases are read
    assert check.poll(T0 + 4 * H + sla.CHECK_EVERY, phases) == []
    assert calls == [1]


def test_a_missed_deadline_is_posted_at_once(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    phase = spec()
    watching(db, phase)
    sla.DeadlineCheck(db, "UTC").poll(T0 + 4 * H, lambda: [phase])
    posted: list[dict[str, Any]] = []
    notifier = Notifier(db, AlertsConfig(webhook="http://127.0.0.1:9/hook"))
    monkeypatch.setattr(notifier, "_post", lambda payload: posted.append(payload) or True)
    assert notifier.poll(T0 + 4 * H) == 1
    assert "missed deadline: etl for 2024-01-02T01:00:00.000000Z (sla 2h)" in posted[0]["text"]
    with db.read() as conn:
        assert conn.scalar(select(alerts.c.notified_at)) is not None


# -- the engine's hook ---------------------------------------------------------------------------


def test_engine_records_a_missed_deadline_of_a_failing_phase(
    write_workflow: WriteWorkflow, workflow_dir: Path, clock: ManualClock, db: Database
) -> None:
    # given an hourly phase that fails, with a 2h deadline
    write_workflow(
        "p.toml",
        f"""
        [[phase]]
        task = "etl"
        rule = "cron=0 * * * *&sla=2h"
        template = "{sys.executable} -c 'raise SystemExit(1)'"
        """,
    )
    engine = make_engine(db, workflow_dir, clock)
    try:
        engine.tick(clock.now())  # 12:00: the phase is seen
        clock.current = datetime(2024, 1, 2, 13, tzinfo=UTC)
        engine.run_once()  # 13:00 fires and fails
        # when ticks go on past 15:00, the deadline of 13:00
        engine.tick(datetime(2024, 1, 2, 15, 0, 59, tzinfo=UTC))
        assert sla_alerts(db) == []
        engine.tick(datetime(2024, 1, 2, 15, 1, 30, tzinfo=UTC))
    finally:
        engine.executor.shutdown(0)
    # then exactly one alert says so
    assert sla_alerts(db) == ["missed deadline: etl for 2024-01-02T13:00:00.000000Z (sla 2h)"]
