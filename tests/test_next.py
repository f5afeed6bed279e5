"""What is coming: ``planner.upcoming`` (pause, DST, catch-up) and ``tomlflow next``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from scheduler.cli import main
from scheduler.loader import RawPhase
from scheduler.planner import Upcoming, signature, upcoming
from scheduler.store.db import Database
from scheduler.store.history import PhaseState
from scheduler.validation import PhaseSpec, validate_file
from tests.conftest import ManualClock, WriteWorkflow, make_site
from tests.test_engine import make_engine

NOW = datetime(2024, 3, 30, 12, tzinfo=UTC)


def spec(rule: str) -> PhaseSpec:
    (only,) = validate_file("w.toml", [RawPhase(task="t", rule=rule, template="echo")])
    return only


def state(of: PhaseSpec, evaluated_until: datetime, paused: bool = False) -> PhaseState:
    return PhaseState("w.toml", "t", evaluated_until, evaluated_until,
                      signature(of, "UTC"), None, paused)  # fmt: skip


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_upcoming_follows_the_dst_policy_in_the_phases_zone() -> None:
    # Berlin springs forward on 2024-03-31: 02:30 does not exist, the daily job runs at 03:00
    berlin = spec("cron=30 2 * * *&tz=Europe/Berlin")
    assert upcoming(berlin, None, NOW, 3, "UTC") == [
        Upcoming(utc(2024, 3, 31, 1)),  # 03:00 CEST, the first instant after the gap
        Upcoming(utc(2024, 4, 1, 0, 30)),  # 02:30 CEST
        Upcoming(utc(2024, 4, 2, 0, 30)),
    ]


def test_upcoming_of_a_paused_phase_is_empty() -> None:
    daily = spec("cron=0 5 * * *")
    assert upcoming(daily, state(daily, NOW, paused=True), NOW, 3, "UTC") == []


@pytest.mark.parametrize("rule", ["manual=1", "manual=1&cron=0 5 * * *", "cron=0 0 30 2 *",
                                  "files=/in/*", "cron=0 5 * * *&colour=red&offset=bad"])
def test_upcoming_of_a_phase_not_on_a_clock_is_empty(rule: str) -> None:
    assert upcoming(spec(rule), None, NOW, 3, "UTC") == []


@pytest.mark.parametrize(
    ("catchup", "late"),
    [
        ("latest", [utc(2024, 3, 30, 5)]),
        ("all", [utc(2024, 3, 28, 5), utc(2024, 3, 29, 5), utc(2024, 3, 30, 5)]),
        ("none", []),
    ],
)
def test_upcoming_after_downtime_starts_with_what_catchup_fires(
    catchup: str, late: list[datetime]
) -> None:
    # given a daily phase last evaluated three days ago (the scheduler was down)
    daily = spec(f"cron=0 5 * * *&catchup={catchup}")
    seen = state(daily, NOW - timedelta(days=3))
    fires = upcoming(daily, seen, NOW, 5, "UTC")
    assert [f.scheduled for f in fires if f.late] == late
    assert next(f.scheduled for f in fires if not f.late) == utc(2024, 3, 31, 5)
    assert len(fires) == 5


def test_upcoming_of_a_changed_schedule_starts_afresh() -> None:
    daily = spec("cron=0 5 * * *")
    old = replace(state(daily, NOW - timedelta(days=3)), cron="0 6 * * *|UTC")
    assert [f.late for f in upcoming(daily, old, NOW, 2, "UTC")] == [False, False]


# -- tomlflow next -------------------------------------------------------------------------------

WORKFLOW = """
[[phase]]
task = "berlin"
rule = "cron=30 2 * * *&tz=Europe/Berlin"
template = "echo"

[[phase]]
task = "by_hand"
rule = "manual=1"
template = "echo"

[[phase]]
task = "feb30"
rule = "cron=0 0 30 2 *"
template = "echo"

[[phase]]
task = "child"
depends_on = "berlin"
template = "echo"
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"w.toml": WORKFLOW}, monkeypatch=monkeypatch)


@freeze_time(NOW)
def test_next_lists_each_cron_phase_in_its_zone_and_utc(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["next", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "w.toml [berlin] cron=30 2 * * * tz=Europe/Berlin" in out
    assert "2024-03-31 03:00:00 CEST  = 2024-03-31 01:00:00 UTC" in out
    assert "2024-04-01 02:30:00 CEST  = 2024-04-01 00:30:00 UTC" in out
    assert "w.toml [by_hand]: manual: runs only when triggered" in out
    assert "w.toml [feb30] cron=0 0 30 2 * tz=UTC: never fires" in out
    assert "child" not in out  # not on a clock: only asked about by name


@freeze_time(NOW)
def test_next_json_and_a_paused_phase(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pause", "berlin"]) == 0
    capsys.readouterr()
    assert main(["next", "berlin", "--json", "-n", "1"]) == 0
    (outlook,) = json.loads(capsys.readouterr().out)
    assert (outlook["task"], outlook["schedule"], outlook["fires"]) == ("berlin", "paused", [])
    assert main(["resume", "berlin"]) == 0
    capsys.readouterr()
    assert main(["next", "berlin", "--json", "-n", "1"]) == 0
    (outlook,) = json.loads(capsys.readouterr().out)
    assert outlook["fires"] == [
        {"local": "2024-03-31T03:00:00+02:00", "utc": "2024-03-31T01:00:00.000000Z", "late": False}
    ]


def test_next_of_an_unknown_task_exits_2(site: Path) -> None:
    assert main(["next", "nope"]) == 2


def test_the_engine_never_fires_a_manual_phase_even_beside_a_cron(
    write_workflow: WriteWorkflow, db: Database, workflow_dir: Path, clock: ManualClock
) -> None:
    # given a manual phase whose rule also says "every minute"
    write_workflow("m.toml", '[[phase]]\ntask = "m"\nrule = "manual=1&cron=* * * * *"\n'
                             'template = "echo"\n')  # fmt: skip
    engine = make_engine(db, workflow_dir, clock)
    try:
        engine.tick(clock.now())
        # when an hour of ticks passes, then nothing was fired
        for _ in range(3):
            clock.advance(timedelta(minutes=20))
            assert engine.tick(clock.now()).fired == 0
    finally:
        engine.executor.shutdown(0)
