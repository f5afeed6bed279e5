"""retry, pause, resume and prune through ``scheduler.cli.main``: real databases and processes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.config import Config
from scheduler.engine import Engine
from scheduler.executors import LocalExecutor
from scheduler.store import history, reruns
from scheduler.store.db import Database
from scheduler.store.history import Execution, LogRow, NewAlert, NewExecution, Status, Trigger
from scheduler.store.schema import alerts, execution_logs, executions, phase_state
from scheduler.tasktime import iso
from tests.conftest import ManualClock, make_site
from tests.conftest import run_main as cli

PY = sys.executable
FLAG = "ok.flag"

PIPELINE = f"""
[[phase]]
task = "root"
rule = "cron=0 0 1 1 *"
template = "{PY} -c 'import os, sys; sys.exit(0 if os.path.exists(\\"{{meta:flag}}\\") else 3)'"

[[phase]]
task = "a"
depends_on = "root"
template = "{PY} -c 'print(\\"a\\")'"

[[phase]]
task = "a1"
depends_on = "a"
template = "{PY} -c 'print(\\"a1\\")'"

[[phase]]
task = "b"
depends_on = "root"
template = "{PY} -c 'print(\\"b\\")'"

[[phase]]
task = "sql:load"
rule = "cron=0 * * * *"
template = "{PY} -c 'print(\\"load\\")'"
"""

T = datetime(2024, 1, 2, tzinfo=UTC)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"p.toml": PIPELINE}, "max_workers = 2\n", monkeypatch)


@pytest.fixture
def db(site: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{site / 'tomlflow.db'}")
    yield database
    database.close()


def rows(db: Database) -> list[Execution]:
    with db.read() as conn:
        query = select(executions).order_by(executions.c.id)
        return [Execution.from_row(r) for r in conn.execute(query)]


def row(db: Database, execution_id: int) -> Execution:
    return next(r for r in rows(db) if r.id == execution_id)


def insert(db: Database, *new: NewExecution) -> list[int]:
    """Insert rows as the scheduler would have left them; returns their ids."""
    with db.write() as conn:
        before = len(rows_in(conn))
        history.insert_executions(conn, new, T)
        return [r.id for r in rows_in(conn)[before:]]


def rows_in(conn: Any) -> list[Execution]:
    return [Execution.from_row(r) for r in conn.execute(select(executions).order_by("id"))]


def new(
    task: str,
    status: Status,
    parent: int | None = None,
    chain: str = "c1",
    attempt: int = 1,
) -> NewExecution:
    return NewExecution(
        task_id=chain,
        file_path="p.toml",
        task=task,
        task_time=T,
        trigger=Trigger.DEPENDENCY if parent else Trigger.MANUAL,
        info=f"{PY} -c \"print('{task}')\"",
        meta={"workflow": "p.toml", "flag": FLAG},
        not_before=T,
        attempt=attempt,
        status=status,
        parent_execution_id=parent,
    )


# -- retry ------------------------------------------------------------------------------------


def test_retry_queues_the_next_attempt_which_runs_and_releases_children(
    site: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a root that failed because its flag file was missing (no retries left)
    assert cli("trigger", "root", "--at", "2024-01-02", "--meta", f"flag={site / FLAG}") == 0
    assert cli("run", "--once") == 1
    [failed] = rows(db)
    assert (failed.status, failed.exit_code) == (Status.ERROR, 3)
    capsys.readouterr()
    # when the flag appears and the operator retries it
    (site / FLAG).write_text("")
    assert cli("retry", str(failed.id), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    rerun = row(db, out["execution_id"])
    # then a queued attempt 2 of the same task, command and meta, triggered by retry
    assert out == {"execution_id": rerun.id, "attempt": 2, "retry_of": failed.id, "cancelled": []}
    assert (rerun.status, rerun.trigger, rerun.attempt) == (Status.QUEUED, Trigger.RETRY, 2)
    same = ("task_id", "file_path", "task", "task_time", "info", "meta", "parent_execution_id")
    assert all(getattr(rerun, k) == getattr(failed, k) for k in same)
    # and a pass of the scheduler runs it, and its children with it
    assert cli("run", "--once") == 0
    done = {r.task: r for r in rows(db) if r.id != failed.id}
    assert {t: r.status for t, r in done.items()} == {
        t: Status.COMPLETE for t in ["root", "a", "a1", "b"]
    }
    assert done["a"].parent_execution_id == rerun.id
    assert done["a1"].parent_execution_id == done["a"].id


def test_retry_numbers_attempts_after_the_chains_highest(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _second = insert(db, new("root", Status.ERROR), new("root", Status.ERROR, attempt=2))
    assert cli("retry", str(first)) == 0
    assert "root attempt 3" in capsys.readouterr().out
    assert rows(db)[-1].attempt == 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ([new("root", Status.QUEUED)], "is still queued"),
        ([new("root", Status.RUNNING)], "is still running"),
        ([new("root", Status.ERROR), new("root", Status.QUEUED, attempt=2)], "is still queued"),
        ([new("gone", Status.COMPLETE)], "p.toml [gone]: phase no longer exists"),
        ([new("b", Status.SKIPPED)], "was skipped"),
        ([], "no execution with id 1"),
    ],
    ids=["queued", "running", "another_attempt_queued", "phase_gone", "skipped", "unknown_id"],
)
def test_retry_refuses_with_exit_2(
    db: Database, capsys: pytest.CaptureFixture[str], setup: list[NewExecution], message: str
) -> None:
    insert(db, *setup)
    before = rows(db)
    assert cli("retry", "1") == 2
    assert message in capsys.readouterr().err
    assert rows(db) == before


def chain(db: Database) -> dict[str, int]:
    """root (complete) → a (complete) → a1 (queued); root → b (queued); plus another chain."""
    [root] = insert(db, new("root", Status.COMPLETE))
    [a, b] = insert(db, new("a", Status.COMPLETE, root), new("b", Status.QUEUED, root))
    [a1] = insert(db, new("a1", Status.QUEUED, a))
    [other] = insert(db, new("b", Status.QUEUED, root, chain="c2"))
    return {"root": root, "a": a, "b": b, "a1": a1, "other": other}


def test_retry_downstream_cancels_queued_descendants_and_reruns_the_chain(
    site: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a chain whose root finished, one child finished and two descendants still queued
    ids = chain(db)
    (site / FLAG).write_text("")
    # when the root is rerun with --downstream
    assert cli("retry", str(ids["root"]), "--downstream") == 0
    assert f"cancelled queued downstream {ids['b']}, {ids['a1']}" in capsys.readouterr().out
    # then the queued descendants are cancelled, finished ones kept, other chains untouched
    for name in ("b", "a1"):
        cancelled = row(db, ids[name])
        assert cancelled.status is Status.CANCELLED
        assert cancelled.msg == f"superseded by rerun of {ids['root']}"
        assert cancelled.ended_at is not None
    assert row(db, ids["a"]).status is Status.COMPLETE
    assert row(db, ids["other"]).status is Status.QUEUED
    # and when the scheduler runs, the rerun releases fresh children that run once each
    assert cli("run", "--once") == 0
    fresh = [r for r in rows(db) if r.id > ids["other"]]
    assert sorted((r.task, r.status.value) for r in fresh) == [
        ("a", "complete"), ("a1", "complete"), ("b", "complete"), ("root", "complete"),
    ]  # fmt: skip


def test_retry_without_downstream_leaves_queued_descendants(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = chain(db)
    assert cli("retry", str(ids["root"])) == 0
    assert [row(db, ids[n]).status for n in ("b", "a1")] == [Status.QUEUED, Status.QUEUED]


# -- pause and resume -------------------------------------------------------------------------


def state(db: Database, task: str) -> dict[str, Any] | None:
    with db.read() as conn:
        found = conn.execute(select(phase_state).where(phase_state.c.task == task)).first()
    return dict(found._mapping) if found else None


def test_pause_and_resume_set_the_flag_and_status_shows_it(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a phase the scheduler never planned, when paused
    before = datetime.now(UTC)
    assert cli("pause", "sql:load") == 0
    assert "p.toml [sql:load]: paused" in capsys.readouterr().out
    # then its state row exists, paused, with an empty cron so the scheduler plans it afresh
    paused = state(db, "sql:load")
    assert paused is not None
    assert (paused["paused"], paused["cron"]) == (1, "")
    assert paused["first_seen"] == paused["evaluated_until"] >= iso(before)
    assert cli("status", "--json") == 0
    shown = {r["task"]: r["paused"] for r in json.loads(capsys.readouterr().out)["phases"]}
    assert shown["sql:load"] is True and shown["root"] is False
    # when paused again, then nothing changes; when resumed, the flag is cleared
    assert cli("pause", "sql:load") == 0
    assert "already paused" in capsys.readouterr().out
    assert cli("resume", "sql:load") == 0
    assert "p.toml [sql:load]: resumed" in capsys.readouterr().out
    assert state(db, "sql:load") == {**paused, "paused": 0}


def test_pause_keeps_a_planned_phases_schedule_state(db: Database) -> None:
    planned = history.PhaseState("p.toml", "root", T, T, "0 0 1 1 *|UTC", T, False)
    with db.write() as conn:
        history.save_phase_states(conn, [planned])
    before = state(db, "root")
    assert cli("pause", "root") == 0
    assert state(db, "root") == {**(before or {}), "paused": 1}


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["pause", "nothing"], 2, "no phase with task 'nothing'"),
        (["pause", "sql"], 0, "p.toml [sql:load]: paused"),  # a unique topic names its phase
        (["pause", "dup"], 2, "names several phases"),
        (["pause", "dup", "--file", "q.toml"], 0, "q.toml [dup]: paused"),
        (["resume", "dup", "--file", "p2.toml"], 0, "p2.toml [dup]: already resumed"),
        (["pause", "a"], 0, "it has no cron: pause only stops cron fires"),
    ],
)
def test_pause_finds_its_phase(
    site: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, expected: str
) -> None:
    dup = '[[phase]]\ntask = "dup"\nrule = "cron=@daily"\ntemplate = "true"\n'
    (site / "workflows" / "q.toml").write_text(dup)
    (site / "workflows" / "p2.toml").write_text(dup)
    assert cli(*args) == code
    captured = capsys.readouterr()
    assert expected in (captured.out + captured.err)


def test_a_paused_phase_still_runs_when_triggered(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("pause", "sql:load") == 0
    assert cli("trigger", "sql:load", "--at", "2024-01-02T05") == 0
    assert cli("run", "--once") == 0
    assert [(r.task, r.status) for r in rows(db)] == [("sql:load", Status.COMPLETE)]


HOURLY = f"""
[[phase]]
task = "hourly"
rule = "cron=0 * * * *&catchup={{catchup}}"
template = "{PY} -c pass"
"""


@pytest.fixture
def engine_site(tmp_path: Path) -> Iterator[tuple[Database, Path, ManualClock, list[Engine]]]:
    folder = tmp_path / "wf"
    folder.mkdir()
    database = Database(f"sqlite:///{tmp_path / 'e.db'}")
    engines: list[Engine] = []
    yield database, folder, ManualClock(datetime(2024, 1, 2, 12, 0, 30, tzinfo=UTC)), engines
    for engine in engines:
        engine.executor.shutdown(0)
    database.close()


def make_engine(
    site: tuple[Database, Path, ManualClock, list[Engine]], catchup: str
) -> tuple[Engine, ManualClock]:
    database, folder, clock, engines = site
    (folder / "h.toml").write_text(HOURLY.replace("{catchup}", catchup))
    config = Config(workflows=folder, database=database.url, max_workers=2)
    engine = Engine(config, database, LocalExecutor(2, clock.now), clock)
    engines.append(engine)
    return engine, clock


def set_paused(database: Database, paused: bool, now: datetime) -> None:
    with database.write() as conn:
        reruns.set_paused(conn, "h.toml", "hourly", paused, now)


@pytest.mark.parametrize(
    ("catchup", "fired_on_resume"),
    [("all", ["15:00", "14:00", "13:00"]), ("latest", ["15:00"]), ("none", [])],
)
def test_paused_phase_is_not_fired_and_resume_follows_catchup(
    engine_site: tuple[Database, Path, ManualClock, list[Engine]],
    catchup: str,
    fired_on_resume: list[str],
) -> None:
    # given an hourly phase the engine has planned, then paused for three fire times
    database = engine_site[0]
    engine, clock = make_engine(engine_site, catchup)
    engine.tick(clock.now())
    set_paused(database, True, clock.now())
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        assert engine.tick(clock.now()).fired == 0
    # when resumed, then the missed times follow its catch-up policy
    set_paused(database, False, clock.now())
    clock.advance(timedelta(minutes=1))
    engine.tick(clock.now())
    with database.read() as conn:
        fired = [r for r in history.list_executions(conn) if r.trigger is Trigger.CRON]
    assert [f"{r.task_time:%H:%M}" for r in fired] == fired_on_resume


def test_a_phase_paused_before_the_engine_started_fires_after_resume(
    engine_site: tuple[Database, Path, ManualClock, list[Engine]],
) -> None:
    database = engine_site[0]
    engine, clock = make_engine(engine_site, "latest")
    set_paused(database, True, clock.now())
    engine.tick(clock.now())
    clock.advance(timedelta(hours=1))
    assert engine.tick(clock.now()).fired == 0
    set_paused(database, False, clock.now())
    clock.advance(timedelta(hours=1))
    assert engine.tick(clock.now()).fired == 1


# -- prune ------------------------------------------------------------------------------------


def aged(db: Database, days: int, status: Status = Status.COMPLETE) -> int:
    """An execution created and ended ``days`` ago, with two log lines and an alert."""
    at = datetime.now(UTC) - timedelta(days=days)
    [eid] = insert(db, new("root", Status.QUEUED))
    with db.write() as conn:
        if status is not Status.QUEUED:
            finish = history.Finish(eid, status, "", 0, at, at)
            history.record_finishes(conn, [finish])
            conn.execute(executions.update().where(executions.c.id == eid).values(
                created_at=iso(at)))  # fmt: skip
        history.insert_logs(conn, [LogRow(eid, n, at, "stdout", "x") for n in range(2)])
        history.insert_alerts(conn, [NewAlert(eid, "c1", "p.toml", "root", T, "failed", "")], at)
    return eid


def table_sizes(db: Database) -> tuple[int, ...]:
    with db.read() as conn:
        return tuple(
            len(conn.execute(select(t)).all()) for t in (executions, execution_logs, alerts)
        )


def test_prune_dry_run_counts_then_prune_deletes(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # given two executions 100 days old, one 10 days old, and an old one still queued
    old = [aged(db, 100), aged(db, 100, Status.ERROR)]
    keep = [aged(db, 10), aged(db, 100, Status.QUEUED)]
    # when dry-run, then it counts and deletes nothing
    assert cli("prune", "--older-than", "90d", "--dry-run", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dry_run"], report["executions"], report["logs"], report["alerts"]) == (
        True, 2, 4, 2,
    )  # fmt: skip
    assert table_sizes(db) == (4, 8, 4)
    # when pruned, then the old ones and their logs and alerts are gone
    assert cli("prune", "--older-than", "90d") == 0
    assert "deleted 2 executions, 4 log lines, 2 alerts" in capsys.readouterr().out
    assert [r.id for r in rows(db)] == keep
    assert not set(old) & {r.id for r in rows(db)}
    assert table_sizes(db) == (2, 4, 2)


def test_prune_uses_the_configured_retention(
    site: Path, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    aged(db, 40)
    assert cli("prune") == 2
    assert "give --older-than" in capsys.readouterr().err
    with (site / "tomlflow.toml").open("a") as config:
        config.write('\n[retention]\nexecutions = "30d"\n')
    assert cli("prune") == 0
    assert "deleted 1 executions" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["ninety", "-5d"])
def test_prune_rejects_a_bad_age(
    db: Database, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert cli("prune", f"--older-than={value}") == 2
    assert "--older-than" in capsys.readouterr().err
