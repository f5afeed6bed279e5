"""The daemon's loop at the edges: a full database, a database file deleted or replaced, a
``run --once`` interrupted, and what the daemon says (banner, file errors, shutdown, refusals).

The full database is forced deterministically on SQLite with ``PRAGMA max_page_count``; the
rest runs ``python -m scheduler`` as a real process and reads what it printed and stored.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from scheduler.cli import main
from scheduler.config import Config
from scheduler.engine import Engine, TickReport
from scheduler.executors import LocalExecutor
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Status
from scheduler.store.schema import execution_logs, scheduler_lease, workflow_phases
from tests.conftest import ManualClock, WriteWorkflow, make_site, wait_for
from tests.conftest import site_rows as rows

PY = sys.executable
LINES = 2000  # enough output that recording it needs new database pages


# -- a full database or disk -----------------------------------------------------------------------


class HookedClock(ManualClock):
    """A manual clock that runs ``on_sleep`` after every sleep."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.on_sleep: Callable[[], None] = lambda: None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.on_sleep()


class PageCap:
    """Caps every new connection of ``db`` at its current size while on (SQLITE_FULL on growth).

    ``PRAGMA max_page_count`` holds per connection, so switching drops the pooled ones.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.on = False
        event.listen(db.engine, "connect", self._connect)

    def _connect(self, dbapi_conn: Any, _record: Any) -> None:
        if self.on:
            dbapi_conn.execute("PRAGMA max_page_count = 1")  # clamps to the current page count

    def switch(self, on: bool) -> None:
        self.on = on
        self.db.engine.dispose()


def chatty(cron: str) -> str:
    code = f"for i in range({LINES}): print('line', i, 'x' * 40)"
    return f"""
        [[phase]]
        task = "chatty"
        rule = "cron={cron}"
        template = {json.dumps(f"{PY} -c {json.dumps(code)}")}
    """


def test_a_full_database_stops_launching_says_so_once_and_resumes_with_nothing_lost(
    tmp_path: Path,
    write_workflow: WriteWorkflow,
    workflow_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a minutely phase with much output, on a SQLite file the test can fill
    write_workflow("w.toml", chatty("* * * * *"))
    db = Database(f"sqlite:///{tmp_path / 'full.db'}")
    clock = HookedClock(datetime(2024, 1, 2, 12, 0, 30, tzinfo=UTC))
    config = Config(workflows=workflow_dir, database=db.url, max_workers=2)
    engine = Engine(config, db, LocalExecutor(2, clock.now), clock)
    cap = PageCap(db)
    stop = threading.Event()

    def on_tick(report: TickReport) -> None:
        if report.started and clock.now() < datetime(2024, 1, 2, 12, 2, tzinfo=UTC):
            cap.switch(True)  # when the disk fills while the 12:01 run works
        if clock.now() >= datetime(2024, 1, 2, 12, 2, 40, tzinfo=UTC):
            stop.set()

    def on_sleep() -> None:
        if cap.on and clock.now() >= datetime(2024, 1, 2, 12, 2, 20, tzinfo=UTC):
            cap.switch(False)  # and space returns after the 12:02 fire time has passed

    clock.on_sleep = on_sleep
    caplog.set_level(logging.INFO, logger="scheduler.engine")
    try:
        engine.run_forever(stop, on_tick=on_tick)
    finally:
        engine.executor.shutdown(0)

    # then both fires ran once and are recorded whole, nothing is stuck, and it said so once
    with db.read() as conn:
        rows = history.list_executions(conn, "chatty", None, 10)
        lines = {
            r.id: len(conn.execute(select(execution_logs).where(
                execution_logs.c.execution_id == r.id)).all())
            for r in rows
        }  # fmt: skip
    db.close()
    assert sorted(f"{r.task_time:%H:%M}" for r in rows) == ["12:01", "12:02"]
    assert [r.status for r in rows] == [Status.COMPLETE, Status.COMPLETE]
    assert all(count >= LINES for count in lines.values())
    full = [r for r in caplog.records if "database or disk is full" in r.getMessage()]
    assert [r.getMessage() for r in full] == [
        "database or disk is full: not launching; retrying every 5s"
    ]
    assert any("launching resumes" in r.getMessage() for r in caplog.records)


# -- real processes ------------------------------------------------------------------------------

SLOW = f"""
[[phase]]
task = "slow"
rule = "cron=0 0 1 1 *"
template = "{PY} -c 'import time; time.sleep(60)'"
"""

BROKEN_PHASE = """
[[phase]]
task = "broken"
rule = "cron=not a cron"
template = "true"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(
        tmp_path,
        {"w.toml": SLOW, "bad.toml": BROKEN_PHASE, "unreadable.toml": "[[phase]\n"},
        'refresh = "1h"\nshutdown_grace = "1s"\n',
    )


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(site: Path, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [PY, "-m", "scheduler", *args, "--config", str(site / "tomlflow.toml")],
            cwd=site,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()




def lease_pid(site: Path) -> int | None:
    if not (site / "tomlflow.db").exists():
        return None
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            pid: int | None = conn.execute(select(scheduler_lease.c.pid)).scalar()
            return pid
    finally:
        db.close()



def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_once_interrupted_cancels_and_requeues_what_runs(
    site: Path, spawn: Callable[..., subprocess.Popen[str]], signum: signal.Signals
) -> None:
    # given a run --once working on a long command
    trigger(site, "slow")
    once = spawn(site, "run", "--once")
    wait_for(lambda: rows(site) and rows(site)[0].status == "running")
    # when it is interrupted
    once.send_signal(signum)
    # then it ends as the daemon does: the execution cancelled and queued again, as it was
    assert once.wait(timeout=15) == 130
    cancelled, again = rows(site)
    assert cancelled.status == "cancelled"
    assert (again.status, again.task) == ("queued", "slow")
    _, err = once.communicate()
    assert "Traceback" not in err


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_stops_the_daemon_with_one_line(
    site: Path, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path, how: str
) -> None:
    daemon = spawn(site, "run")
    wait_for(lambda: lease_pid(site) == daemon.pid)
    path = site / "tomlflow.db"
    if how == "deleted":
        path.unlink()
    else:
        other = Database(f"sqlite:///{tmp_path / 'other.db'}")
        other.close()
        os.replace(tmp_path / "other.db", path)

    assert daemon.wait(timeout=15) == 2
    _, err = daemon.communicate()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: database file {path} was deleted or replaced while the scheduler ran: "
        "stopping (nothing more is written to it)"
    ]
    assert "Traceback" not in err


def test_banner_then_a_second_run_refused_then_shutdown_says_what_it_waits_for(
    site: Path, spawn: Callable[..., subprocess.Popen[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    # given a daemon started with a queued run of a long command
    trigger(site, "slow")
    daemon = spawn(site, "run")
    # then its banner names the database, the folder, the phases, the errors and the next fire
    banner = first_line(daemon)
    assert banner.startswith(
        f"tomlflow running on database sqlite:///{site / 'tomlflow.db'}, workflows "
        f"{site / 'workflows'}: 2 phases loaded, 1 with errors; 1 files do not load; "
        "next fire slow at 2"
    )
    assert banner.rstrip().endswith(" UTC (Ctrl-C stops)")
    # and a second run is refused before it prints anything
    capsys.readouterr()
    assert main(["run", "--config", str(site / "tomlflow.toml")]) == 2
    second = capsys.readouterr()
    assert second.out == ""
    assert len(second.err.splitlines()) == 1
    assert f"pid {daemon.pid}" in second.err
    # and on SIGTERM it says what it waits for, and how long
    wait_for(lambda: rows(site) and rows(site)[0].status == "running")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    _, err = daemon.communicate()
    assert (
        "stopping: waiting up to 1s for 1 running executions (slow #1); "
        "then they are cancelled and queued again"
    ) in err
    assert "Traceback" not in err + second.err


def test_a_workflow_error_is_logged_at_start_and_again_when_it_changes(
    site: Path, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    daemon = spawn(site, "run")
    first_line(daemon)
    (site / "workflows" / "bad.toml").write_text(BROKEN_PHASE.replace("not a cron", "nope"))
    (site / "workflows" / "unreadable.toml").write_text(SLOW.replace('"slow"', '"fixed"'))
    daemon.send_signal(signal.SIGHUP)  # refresh now
    wait_for(lambda: len(phase_rows(site)) == 3)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    _, err = daemon.communicate()

    said = [line.split(": ", 1)[1] for line in err.splitlines() if ": workflow " in line]
    assert [line.split(":")[0] for line in said] == [
        "workflow unreadable.toml",
        "workflow bad.toml [broken]",
        "workflow bad.toml [broken]",
        "workflow unreadable.toml",
    ]
    assert "invalid TOML" in said[0]
    assert "invalid cron: not a cron" in said[1]
    assert "invalid cron: nope" in said[2]
    assert said[3] == "workflow unreadable.toml: no longer in error"


def trigger(site: Path, task: str) -> None:
    assert main(["trigger", task, "--config", str(site / "tomlflow.toml")]) == 0


def phase_rows(site: Path) -> list[Any]:
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            return list(conn.execute(select(workflow_phases)).all())
    finally:
        db.close()


@pytest.mark.parametrize("once", [[], ["--once"]])
def test_a_missing_workflows_folder_is_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    once: list[str],
) -> None:
    site = make_site(tmp_path, {}, monkeypatch=monkeypatch)
    (site / "workflows").rmdir()

    assert main(["run", *once]) == 2

    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"error: {site / 'workflows'}: no such file or folder"]
    assert captured.out == ""


def test_run_once_json_prints_its_summary_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    quick = SLOW.replace("import time; time.sleep(60)", "pass")
    make_site(tmp_path, {"w.toml": quick}, monkeypatch=monkeypatch)
    assert main(["trigger", "slow"]) == 0
    capsys.readouterr()

    assert main(["run", "--once", "--json"]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert summary == {
        "fired": 0,
        "started": 1,
        "finished": 1,
        "failed": 0,
        "statuses": {"complete": 1},
        "interrupted": False,
    }


def test_display_url_hides_the_password() -> None:
    db = Database("postgresql+psycopg://ops:s3cret@db.example:5432/flows", migrate=False)
    assert db.display_url() == "postgresql+psycopg://ops:***@db.example:5432/flows"
    assert db.file_identity() is None


def test_file_identity_changes_when_the_file_is_replaced(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    identity = db.file_identity()
    assert identity is not None and identity.still_there()
    os.replace(tmp_path / "a.db", tmp_path / "b.db")
    (tmp_path / "a.db").write_bytes(b"")
    assert not identity.still_there()
    db.close()


def test_now_and_monotonic_of_the_test_clock_move_together_unless_stepped() -> None:
    clock = ManualClock(datetime(2024, 1, 2, tzinfo=UTC))
    clock.advance(timedelta(seconds=3))
    clock.step(timedelta(hours=-1))
    assert (clock.monotonic(), clock.now()) == (3.0, datetime(2024, 1, 1, 23, 0, 3, tzinfo=UTC))
