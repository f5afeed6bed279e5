"""The engine driven through ``tick(now)`` and ``run_once`` with a manual clock and real processes.

Commands are real subprocesses (``sys.executable -c ...``); only the clock is the test's.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler import engine as engine_module
from scheduler import schedules
from scheduler.config import Config
from scheduler.engine import Engine
from scheduler.executors import LocalExecutor, Outcome, Result
from scheduler.executors.base import make_outcome
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Execution, Status
from scheduler.store.schema import alerts, executions
from tests.conftest import ManualClock, WriteWorkflow

PY = sys.executable


def q(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def emit(meta: dict[str, str], exit_code: int = 0) -> str:
    """A template running Python that emits ``meta`` and exits with ``exit_code``."""
    event = "__WF_EVENT__:" + json.dumps({"meta": meta})
    code = f"print({event!r}); raise SystemExit({exit_code})"
    return f"{PY} -c {json.dumps(code)}"


def make_engine(
    db: Database, workflow_dir: Path, clock: ManualClock, **overrides: object
) -> Engine:
    settings: dict[str, object] = {
        "workflows": workflow_dir,
        "database": db.url,
        "max_workers": 4,
    }
    settings.update(overrides)
    config = Config(**settings)  # type: ignore[arg-type]
    return Engine(config, db, LocalExecutor(config.max_workers, clock.now), clock)


def all_rows(db: Database) -> list[Execution]:
    with db.read() as conn:
        rows = conn.execute(select(executions).order_by(executions.c.id))
        return [Execution.from_row(row) for row in rows]


def by_task(db: Database) -> dict[str, list[Execution]]:
    grouped: dict[str, list[Execution]] = {}
    for row in all_rows(db):
        grouped.setdefault(row.task, []).append(row)
    return grouped


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def run_pass_at(engine: Engine, clock: ManualClock, when: str) -> None:
    """The engine sees the phases now (their schedules start), then runs a pass at ``when``."""
    engine.tick(clock.now())
    clock.current = at(when)
    engine.run_once()


@pytest.fixture
def engine_for(db: Database, workflow_dir: Path, clock: ManualClock):  # type: ignore[no-untyped-def]
    engines: list[Engine] = []

    def build(**overrides: object) -> Engine:
        engine = make_engine(db, workflow_dir, clock, **overrides)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.executor.shutdown(0)


def test_cron_fire_runs_child_and_grandchild_with_task_time_and_meta(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    # Given a daily cron root whose output meta feeds a child and a grandchild
    write_workflow(
        "chain.toml",
        f"""
        [[phase]]
        task = "extract:orders"
        rule = "cron=0 5 * * *&offset=-24h"
        template = {q(emit({"file": "/data/orders.json"}))}

        [[phase]]
        task = "transform"
        depends_on = "extract"
        template = "{PY} -c pass {{meta:file}} {{yyyy}}-{{mm}}-{{dd}}T{{hh}}"

        [[phase]]
        task = "load"
        depends_on = "transform"
        template = "{PY} -c pass {{meta:file}} {{meta:cron}}"
    """,
    )
    clock.current = at("2024-01-02T04:00:00")
    engine = engine_for()
    engine.tick(clock.now())  # the phase is seen: its schedule starts now

    # When the clock passes 05:00 and the scheduler runs a pass
    clock.current = at("2024-01-02T05:00:00.300000")
    report = engine.run_once()

    # Then all three ran once, in one chain, with the scheduled task time and the emitted meta
    rows = by_task(db)
    assert report.failed == 0
    assert [len(rows[t]) for t in ("extract:orders", "transform", "load")] == [1, 1, 1]
    root, child, grandchild = rows["extract:orders"][0], rows["transform"][0], rows["load"][0]
    assert {r.status for r in (root, child, grandchild)} == {Status.COMPLETE}
    assert root.task_time == at("2024-01-01T05:00:00")
    assert child.task_time == grandchild.task_time == root.task_time
    assert child.task_id == grandchild.task_id == root.task_id
    assert child.parent_execution_id == root.id and grandchild.parent_execution_id == child.id
    assert child.info.endswith("/data/orders.json 2024-01-01T05")
    assert grandchild.info.endswith("/data/orders.json 2024-01-01T05")
    assert root.meta == {  # its input meta plus what it emitted
        "workflow": "chain.toml",
        "job": "orders",
        "cron": "2024-01-01T05",
        "file": "/data/orders.json",
    }
    assert grandchild.meta["cron"] == "2024-01-01T05"
    assert root.trigger.value == "cron" and child.trigger.value == "dependency"


def test_failing_command_is_retried_with_its_delays_then_alerted(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    # Given a phase that always fails, with 2 retries 10s apart, doubling
    write_workflow(
        "fail.toml",
        f"""
        [[phase]]
        task = "flaky"
        rule = "cron=0 * * * *&retry_delay=10s&retry_backoff=exponential"
        retry = 2
        template = "{PY} -c 'import sys; sys.exit(\\"disk full\\")'"
    """,
    )
    engine = engine_for()
    engine.tick(clock.now())
    clock.current = at("2024-01-02T13:00:00")

    # When a pass runs it to the end (the manual clock jumps over the delays)
    report = engine.run_once()

    # Then three attempts ran, spaced by 10s then 20s (plus up to 40 % jitter), then one alert
    rows = by_task(db)["flaky"]
    assert [(r.attempt, r.status) for r in rows] == [
        (1, Status.ERROR),
        (2, Status.ERROR),
        (3, Status.ERROR),
    ]
    assert rows[0].msg == "exit code 1: disk full"
    first_gap = (rows[1].not_before - rows[0].ended_at).total_seconds()  # type: ignore[operator]
    second_gap = (rows[2].not_before - rows[1].ended_at).total_seconds()  # type: ignore[operator]
    assert 10 <= first_gap <= 14.01 and 20 <= second_gap <= 28.01
    assert [r.meta.get("retry") for r in rows] == [None, "1", "2"]
    assert {r.task_id for r in rows} == {rows[0].task_id}
    with db.read() as conn:
        alert_rows = conn.execute(select(alerts)).all()
    assert [(a.task, a.kind, a.execution_id) for a in alert_rows] == [
        ("flaky", "failed", rows[2].id)
    ]
    assert report.failed == 1


def test_no_alert_rule_records_no_alert(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    write_workflow(
        "quiet.toml",
        f"""
        [[phase]]
        task = "quiet"
        rule = "cron=0 * * * *&no_alert=1"
        template = "{PY} -c 'raise SystemExit(3)'"
    """,
    )
    run_pass_at(engine_for(), clock, "2024-01-02T13:00:00")
    with db.read() as conn:
        assert conn.execute(select(alerts)).all() == []
    assert by_task(db)["quiet"][0].exit_code == 3


@pytest.mark.parametrize(
    ("emitted", "expected"),
    [
        ({"file": "in.csv"}, Status.COMPLETE),
        ({"other": "x"}, Status.SKIPPED),
        ({"file": ""}, Status.SKIPPED),
    ],
)
def test_require_runs_or_skips_the_child(
    emitted: dict[str, str],
    expected: Status,
    write_workflow: WriteWorkflow,
    engine_for,
    clock: ManualClock,
    db: Database,
) -> None:
    write_workflow(
        "req.toml",
        f"""
        [[phase]]
        task = "parent"
        rule = "cron=0 * * * *"
        template = {q(emit(emitted))}

        [[phase]]
        task = "child"
        depends_on = "parent"
        rule = "require={{meta:file}}"
        template = "{PY} -c pass {{meta:file}}"
    """,
    )
    run_pass_at(engine_for(), clock, "2024-01-02T13:00:00")
    child = by_task(db)["child"][0]
    assert child.status is expected
    if expected is Status.SKIPPED:
        assert child.msg == "require not met: {meta:file} empty in parent meta"


def test_children_by_topic_and_by_topic_job(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    # Given two jobs of one topic; one child follows the topic, one only job b
    write_workflow(
        "jobs.toml",
        f"""
        [[phase]]
        task = "worker:a"
        rule = "cron=0 * * * *"
        template = "{PY} -c pass"

        [[phase]]
        task = "worker"
        rule = "cron=0 * * * *&job=b"
        template = "{PY} -c pass"

        [[phase]]
        task = "any"
        depends_on = "worker"
        template = "{PY} -c pass"

        [[phase]]
        task = "only_b"
        depends_on = "worker:b"
        template = "{PY} -c pass"
    """,
    )
    run_pass_at(engine_for(), clock, "2024-01-02T13:00:00")
    rows = by_task(db)
    assert len(rows["any"]) == 2
    assert len(rows["only_b"]) == 1
    parent = next(r for r in all_rows(db) if r.id == rows["only_b"][0].parent_execution_id)
    assert parent.task == "worker:b"


def test_timeout_kills_and_records_error(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    write_workflow(
        "slow.toml",
        f"""
        [[phase]]
        task = "slow"
        rule = "cron=0 * * * *&timeout=300ms"
        template = "{PY} -c 'import time; time.sleep(30)'"
    """,
    )
    run_pass_at(engine_for(), clock, "2024-01-02T13:00:00")
    row = by_task(db)["slow"][0]
    assert row.status is Status.ERROR
    assert row.msg == "timeout after 300ms"


def test_concurrency_rule_limits_running_executions(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database, tmp_path: Path
) -> None:
    # Given a phase limited to 1 at a time, triggered 3 times, with 4 workers free
    marks = tmp_path / "marks"
    marks.mkdir()
    code = (
        "import os, sys, time; d = sys.argv[1]; "
        "open(os.path.join(d, 'start-%d' % time.time_ns()), 'w').close(); time.sleep(0.2); "
        "open(os.path.join(d, 'end-%d' % time.time_ns()), 'w').close()"
    )
    write_workflow(
        "one.toml",
        f"""
        [[phase]]
        task = "solo"
        rule = "files=*.csv&concurrency=1"
        template = {q(PY + " -c " + json.dumps(code) + " " + str(marks))}
    """,
    )
    engine = engine_for()
    engine.tick(clock.now())
    spec = engine.catalog.get("solo")
    assert spec is not None
    from scheduler.planner import base_meta, new_rows

    with db.write() as conn:
        for hour in range(3):
            rows = new_rows(
                spec,
                clock.now() + timedelta(hours=hour),
                base_meta(spec),
                history.Trigger.MANUAL,
                clock.now(),
                engine.workflows,
            )
            history.insert_executions(conn, rows, clock.now())

    engine.run_once()

    # Then the three ran one after another: each start is after the previous end
    events = sorted((int(p.name.split("-")[1]), p.name.split("-")[0]) for p in marks.iterdir())
    assert [kind for _, kind in events] == ["start", "end"] * 3
    assert {r.status for r in all_rows(db)} == {Status.COMPLETE}


def test_restart_never_fires_the_same_cron_time_twice(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    write_workflow(
        "hourly.toml",
        f"""
        [[phase]]
        task = "hourly"
        rule = "cron=0 * * * *"
        template = "{PY} -c pass"
    """,
    )
    first = engine_for()
    first.tick(clock.now())
    clock.current = at("2024-01-02T13:00:00.100000")
    first.run_once()

    # When a second scheduler (a restart) ticks at the same and a later moment of that hour
    second = engine_for()
    second.run_once()
    clock.current = at("2024-01-02T13:30:00")
    second.run_once()

    # Then the 13:00 fire exists once
    fires = [r for r in all_rows(db) if r.trigger.value == "cron"]
    assert [r.task_time for r in fires] == [at("2024-01-02T13:00:00")]


def test_a_stale_state_racing_a_fire_is_stopped_by_the_unique_key(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    # Given two schedulers that both believe 13:00 has not fired yet (both saw 12:00)
    write_workflow(
        "hourly.toml",
        f"""
        [[phase]]
        task = "hourly"
        rule = "cron=0 * * * *"
        template = "{PY} -c pass"
    """,
    )
    a, b = engine_for(), engine_for()
    a.tick(clock.now())
    b.tick(clock.now())
    clock.current = at("2024-01-02T13:00:00.100000")

    # When both fire
    assert a.tick(clock.now()).fired == 1
    assert b.tick(clock.now()).fired == 0
    a.run_once()
    b.run_once()

    # Then the database holds one 13:00 fire
    assert len([r for r in all_rows(db) if r.trigger.value == "cron"]) == 1


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        ("latest", ["2024-01-05T05:00:00"]),
        ("all", ["2024-01-03T05:00:00", "2024-01-04T05:00:00", "2024-01-05T05:00:00"]),
        ("none", []),
    ],
)
def test_catch_up_after_three_missed_days(
    catchup: str,
    expected: list[str],
    write_workflow: WriteWorkflow,
    engine_for,
    clock: ManualClock,
    db: Database,
) -> None:
    # Given a daily phase last evaluated on Jan 2, and a scheduler down until Jan 5 12:00
    write_workflow(
        "daily.toml",
        f"""
        [[phase]]
        task = "daily"
        rule = "cron=0 5 * * *&catchup={catchup}"
        template = "{PY} -c pass"
    """,
    )
    engine_for().tick(clock.now())
    clock.current = at("2024-01-05T12:00:00")

    # When it comes back
    engine_for().run_once()

    # Then the missed times follow the catch-up policy
    assert [r.task_time for r in all_rows(db)] == [at(t) for t in expected]


def test_paused_phase_does_not_fire(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    write_workflow(
        "p.toml",
        f"""
        [[phase]]
        task = "p"
        rule = "cron=0 * * * *"
        template = "{PY} -c pass"
    """,
    )
    engine = engine_for()
    engine.tick(clock.now())
    with db.write() as conn:
        conn.execute(history.phase_state.update().values(paused=1))
    clock.current = at("2024-01-02T15:00:00")
    engine.run_once()
    assert all_rows(db) == []


def test_a_fire_that_cannot_build_its_rows_is_recorded_and_counted_as_fired(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    """An unreadable meta-file records one error row for the fire; the tick reports it fired."""
    write_workflow(
        "m.toml",
        f'[[phase]]\ntask = "m"\nrule = "cron=0 * * * *&meta-file=gone.json"\ntemplate = "{PY}"\n',
    )
    engine = engine_for()
    engine.tick(clock.now())
    clock.current = at("2024-01-02T15:00:00")
    report = engine.tick(clock.now())
    rows = all_rows(db)
    assert [(r.task, r.status) for r in rows] == [("m", Status.ERROR)]
    assert report.fired == 1


def test_a_paused_phase_past_its_fire_time_does_not_wake_the_daemon_at_once(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    """A paused phase keeps its past next_fire; waking for it would spin the daemon."""
    write_workflow("p.toml", f'[[phase]]\ntask = "p"\nrule = "cron=0 * * * *"\ntemplate = "{PY}"\n')
    engine = engine_for()
    engine.tick(clock.now())
    with db.write() as conn:
        conn.execute(history.phase_state.update().values(paused=1))
    clock.current = at("2024-01-02T15:00:00")
    engine.tick(clock.now())
    clock.current += timedelta(milliseconds=1)
    engine.tick(clock.now())  # the idle poll is taken: only schedules bound the wait now
    assert engine.next_wakeup(clock.now()) > clock.now()


def test_warn_completes_without_children(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    warn = "__WF_EVENT__:" + json.dumps({"result": "warn", "msg": "half the rows"})
    write_workflow(
        "w.toml",
        f"""
        [[phase]]
        task = "parent"
        rule = "cron=0 * * * *"
        template = {q(PY + " -c " + json.dumps("print(" + repr(warn) + ")"))}

        [[phase]]
        task = "child"
        depends_on = "parent"
        template = "{PY} -c pass"
    """,
    )
    run_pass_at(engine_for(), clock, "2024-01-02T13:00:00")
    rows = by_task(db)
    assert rows["parent"][0].status is Status.WARN
    assert rows["parent"][0].msg == "half the rows"
    assert "child" not in rows


def test_logs_are_recorded_per_execution(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    write_workflow(
        "l.toml",
        f"""
        [[phase]]
        task = "talk"
        rule = "cron=0 * * * *"
        template = "{PY} -c 'import sys; print(\\"out\\"); print(\\"err\\", file=sys.stderr)'"
    """,
    )
    run_pass_at(engine_for(), clock, "2024-01-02T13:00:00")
    row = all_rows(db)[0]
    with db.read() as conn:
        lines = history.execution_logs_of(conn, row.id)
    assert sorted((x.stream, x.line) for x in lines) == [("stderr", "err"), ("stdout", "out")]


def test_output_reaches_the_logs_while_the_command_runs(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    write_workflow(
        "live.toml",
        f"""
        [[phase]]
        task = "live"
        rule = "cron=0 * * * *"
        template = "sh -c 'echo first; while [ ! -e {go} ]; do sleep 0.02; done; echo second'"
    """,
    )
    engine = engine_for()
    engine.tick(clock.now())
    clock.current = at("2024-01-02T13:00:00")
    engine.tick(clock.now())

    def stored() -> list[str]:
        with db.read() as conn:
            return [x.line for x in history.execution_logs_of(conn, all_rows(db)[0].id)]

    deadline = time.monotonic() + 10
    while stored() != ["first"]:  # a tick stores what the running command printed so far
        assert time.monotonic() < deadline
        engine.wait(clock.now() + timedelta(milliseconds=100))
        engine.tick(clock.now())
    assert all_rows(db)[0].status is Status.RUNNING

    go.touch()
    while all_rows(db)[0].status is Status.RUNNING:
        assert time.monotonic() < deadline
        engine.wait(clock.now() + timedelta(milliseconds=100))
        engine.tick(clock.now())

    with db.read() as conn:
        logs = history.execution_logs_of(conn, all_rows(db)[0].id)
    assert [(x.seq, x.line) for x in logs] == [(1, "first"), (2, "second")]


def test_daemon_prunes_executions_older_than_the_retention(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    # Given one execution that ended 60 days ago and one from yesterday, and 30 days retention
    write_workflow(
        "r.toml",
        f"""
        [[phase]]
        task = "r"
        rule = "cron=0 0 1 1 *"
        template = "{PY} -c pass"
    """,
    )
    start = clock.now()
    with db.write() as conn:
        for age in (60, 1):
            when = start - timedelta(days=age)
            row = history.NewExecution(
                task_id="c",
                file_path="r.toml",
                task="r",
                task_time=when,
                trigger=history.Trigger.MANUAL,
                info="",
                meta={},
                not_before=when,
                status=Status.COMPLETE,
            )
            history.insert_executions(conn, [row], when)
    engine = engine_for(retention=timedelta(days=30))

    # When the daemon loop runs
    stop = threading.Event()
    loop = threading.Thread(target=engine.run_forever, args=(stop,))
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while len(all_rows(db)) != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        loop.join()

    # Then only yesterday's execution is left
    assert [r.task_time for r in all_rows(db)] == [start - timedelta(days=1)]


def test_daemon_fires_file_phases_for_files_that_appear_in_the_watched_folder(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database, tmp_path: Path
) -> None:
    # Given a watched folder and a phase for its csv files
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    write_workflow(
        "files.toml",
        f"""
        [[phase]]
        task = "load"
        rule = "files={incoming}/*/*.csv"
        template = "{PY} -c pass {{meta:filename}} {{yyyy}}-{{mm}}-{{dd}}"
    """,
    )
    engine = engine_for(watch=incoming)
    engine.tick(clock.now())  # the first scan takes stock

    # When a file appears and then stays unchanged for one scan
    (incoming / "2024-03-04").mkdir()
    (incoming / "2024-03-04" / "orders.csv").write_text("a,b\n")
    for _ in range(2):
        clock.advance(timedelta(seconds=3))
        engine.tick(clock.now())
    engine.run_once()

    # Then the phase ran once for it, with the file's meta and the time from its path
    (row,) = all_rows(db)
    assert (row.trigger.value, row.status) == ("file", Status.COMPLETE)
    assert row.meta["file"] == str(incoming / "2024-03-04" / "orders.csv")
    assert row.info.endswith("orders.csv 2024-03-04")


def test_an_alert_result_is_posted_to_the_webhook(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    # Given a local webhook receiver and a phase whose command reports an alert
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from scheduler.config import AlertsConfig

    bodies: list[dict[str, object]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    event = "__WF_EVENT__:" + json.dumps({"result": "alert", "msg": "ledger out of balance"})
    write_workflow(
        "a.toml",
        f"""
        [[phase]]
        task = "ledger"
        rule = "cron=0 * * * *"
        template = {q(PY + " -c " + json.dumps("print(" + repr(event) + ")"))}
    """,
    )
    webhook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    engine = engine_for(alerts=AlertsConfig(webhook=webhook))
    try:
        engine.tick(clock.now())
        clock.current = at("2024-01-02T13:00:00")

        # When a pass runs it
        engine.run_once()
    finally:
        server.shutdown()
        server.server_close()

    # Then the alert is recorded, posted once, and marked sent
    assert len(bodies) == 1
    assert "ledger" in str(bodies[0]["text"]) and "ledger out of balance" in str(bodies[0]["text"])
    with db.read() as conn:
        (alert,) = conn.execute(select(alerts)).all()
    assert alert.kind == "alert" and alert.notified_at is not None


def test_a_tick_with_no_cron_phase_due_looks_at_none_of_them(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of phases costs a tick nothing per phase until the next one is due."""
    write_workflow(
        "h.toml",
        "".join(
            f'[[phase]]\ntask = "h{i}"\nrule = "cron=0 * * * *"\ntemplate = "{PY}"\n'
            for i in range(50)
        ),
    )
    engine = engine_for()
    engine.tick(clock.now())  # every phase planned: next fire on the hour
    looks: list[str] = []
    real = schedules._needs_planning
    monkeypatch.setattr(
        schedules, "_needs_planning", lambda spec, *a: looks.append(spec.task) or real(spec, *a)
    )
    clock.current += timedelta(minutes=1)
    engine.tick(clock.now())
    assert looks == []
    assert engine.next_wakeup(clock.now()) <= at("2024-01-02T15:00:00")


def test_a_phase_added_by_a_refresh_is_planned_and_fires_before_the_ones_planned_earlier(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock, db: Database
) -> None:
    hourly = f'[[phase]]\ntask = "hourly"\nrule = "cron=0 * * * *"\ntemplate = "{PY}"\n'
    write_workflow("h.toml", hourly)
    engine = engine_for()
    engine.tick(clock.now())
    write_workflow(
        "m.toml", f'[[phase]]\ntask = "minutely"\nrule = "cron=* * * * *"\ntemplate = "{PY}"\n'
    )
    engine.refresh_requested.set()
    engine.tick(clock.now())  # seen now: its schedule starts
    clock.current = at("2024-01-02T12:01:00")
    assert engine.tick(clock.now()).fired == 1
    assert [r.task for r in all_rows(db)] == ["minutely"]


def test_a_chore_due_a_hair_after_now_wakes_the_loop_after_now_not_at_now(
    write_workflow: WriteWorkflow, engine_for, clock: ManualClock
) -> None:
    """A wake-up at ``now`` would find the chore not yet due and spin until it is."""
    write_workflow("p.toml", f'[[phase]]\ntask = "p"\nrule = "cron=0 * * * *"\ntemplate = "{PY}"\n')
    engine = engine_for(refresh=timedelta(seconds=1))
    engine.tick(clock.now())  # the refresh is taken: next due at monotonic 1.0
    engine.next_wakeup(clock.now())  # and the idle poll
    clock.mono = 1.0 - 1e-13  # what summing sleeps of 0.997 and 0.003 can give
    assert engine.next_wakeup(clock.now()) > clock.now()


class ScriptedEnds(LocalExecutor):
    """Ends handed out one per ``collect``, as executions ending a moment apart give them."""

    def __init__(self, now: Callable[[], datetime], ends: int) -> None:
        super().__init__(1, now)
        at = now()
        self.ends = [make_outcome(i, Result.COMPLETE, "", at, at) for i in range(1, ends + 1)]
        self.waits: list[float | None] = []

    def running(self) -> int:
        return len(self.ends)

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        self.waits.append(timeout)
        return [self.ends.pop(0)] if self.ends else []


@pytest.mark.parametrize(("ends", "recorded"), [(3, [1, 2]), (1, [1])])
def test_an_end_while_others_run_waits_a_moment_for_the_next_to_be_recorded_with_it(
    write_workflow: WriteWorkflow,
    db: Database,
    workflow_dir: Path,
    clock: ManualClock,
    ends: int,
    recorded: list[int],
) -> None:
    """One tick records ends that come a moment apart; a lone execution's end never waits."""
    write_workflow("p.toml", f'[[phase]]\ntask = "p"\nrule = "cron=0 * * * *"\ntemplate = "{PY}"\n')
    executor = ScriptedEnds(clock.now, ends)
    engine = Engine(Config(workflows=workflow_dir, database=db.url), db, executor, clock)
    engine.wait(clock.now() + timedelta(seconds=1))
    assert [o.execution_id for o in engine._early] == recorded
    assert executor.waits[1:] == [engine_module.END_LINGER] * (len(recorded) - 1)
