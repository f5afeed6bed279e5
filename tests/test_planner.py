"""The planner: cron state transitions and the rows a fire queues. Pure: explicit times."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler import planner
from scheduler.loader import RawPhase, normalise_task
from scheduler.validation import PhaseSpec, validate_file

T0 = datetime(2024, 1, 3, 0, 0, tzinfo=UTC)


def spec(rule: str, template: str = "run {yyyy}-{mm}-{dd}T{hh}") -> PhaseSpec:
    raw = RawPhase(task=normalise_task("t", rule), rule=rule, template=template)
    (only,) = validate_file("f.toml", [raw])
    assert only.runnable, only.status
    return only


def test_a_phase_seen_first_starts_its_schedule_then() -> None:
    plan = planner.plan_cron(spec("cron=0 * * * *"), None, T0, "UTC")
    assert plan.fires == []
    assert plan.state.first_seen == plan.state.evaluated_until == T0
    assert plan.state.next_fire == datetime(2024, 1, 3, 1, tzinfo=UTC)


def test_due_time_fires_and_state_advances() -> None:
    first = planner.plan_cron(spec("cron=0 * * * *"), None, T0, "UTC").state
    later = datetime(2024, 1, 3, 1, 0, 5, tzinfo=UTC)
    plan = planner.plan_cron(spec("cron=0 * * * *"), first, later, "UTC")
    assert [f.scheduled for f in plan.fires] == [datetime(2024, 1, 3, 1, tzinfo=UTC)]
    assert plan.state.evaluated_until == later
    assert plan.state.next_fire == datetime(2024, 1, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("old_rule", "new_rule"),
    [("cron=0 5 * * *", "cron=0 6 * * *"), ("cron=0 5 * * *", "cron=0 5 * * *&tz=Europe/Berlin")],
)
def test_a_changed_schedule_starts_again_without_phantom_fires(
    old_rule: str, new_rule: str
) -> None:
    # Given a state evaluated long ago under the old schedule
    state = planner.plan_cron(spec(old_rule), None, T0, "UTC").state
    much_later = datetime(2024, 1, 9, 12, tzinfo=UTC)

    # When the schedule changed meanwhile
    plan = planner.plan_cron(spec(new_rule), state, much_later, "UTC")

    # Then nothing fires for the days in between, and first_seen is kept
    assert plan.fires == []
    assert plan.state.first_seen == T0
    assert plan.state.evaluated_until == much_later


def test_paused_phase_plans_nothing_and_keeps_its_place() -> None:
    state = replace(planner.plan_cron(spec("cron=0 * * * *"), None, T0, "UTC").state, paused=True)
    plan = planner.plan_cron(spec("cron=0 * * * *"), state, datetime(2024, 1, 4, tzinfo=UTC), "UTC")
    assert plan.fires == [] and plan.state == state


def test_cron_fire_rows_carry_scheduled_time_offset_and_meta() -> None:
    fire = planner.Fire(
        spec("cron=0 5 * * *&offset=-24h&job=orders"), datetime(2024, 1, 3, 5, tzinfo=UTC)
    )
    (row,) = planner.rows_for_fire(fire, datetime(2024, 1, 3, 5, 7, tzinfo=UTC), Path("."))
    assert row.task_time == datetime(2024, 1, 2, 5, tzinfo=UTC)
    assert row.info == "run 2024-01-02T05"
    assert row.meta == {"workflow": "f.toml", "job": "orders", "cron": "2024-01-02T05"}
    assert row.fire_key == "2024-01-03T05:00:00.000000Z#0"


def test_batch_cron_fire_queues_one_row_per_step_each_with_its_own_stamp() -> None:
    fire = planner.Fire(spec("cron=0 0 * * *&for=-48h"), T0)
    rows = planner.rows_for_fire(fire, T0, Path("."))
    assert [r.info for r in rows] == ["run 2024-01-03T00", "run 2024-01-02T00", "run 2024-01-01T00"]
    assert [r.meta["cron"] for r in rows] == ["2024-01-03T00", "2024-01-02T00", "2024-01-01T00"]
    assert len({r.fire_key for r in rows}) == 3
    assert len({r.task_id for r in rows}) == 1


def test_meta_batch_renders_each_row() -> None:
    fire = planner.Fire(spec("cron=0 0 * * *&meta=name:a,b|n:1,2", "{meta:name}={meta:n}"), T0)
    rows = planner.rows_for_fire(fire, T0, Path("."))
    assert [r.info for r in rows] == ["a=1", "b=2"]
    assert rows[1].meta["name"] == "b"
