"""The daemon as a real process: kill -9 recovery, the lease, SIGTERM and SIGHUP.

Each test starts ``python -m scheduler run`` on a temporary folder and reads the outcome from
the database, as an operator would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.store.db import Database
from scheduler.store.schema import execution_logs, executions, scheduler_lease, workflow_phases
from tests.conftest import make_site

PY = sys.executable
SLEEPER = f"""
[[phase]]
task = "sleeper"
rule = "cron=0 0 1 1 *"
retry = 1
template = "{PY} -c 'import time; time.sleep(60)'"

[[phase]]
task = "waiter"
rule = "cron=0 0 1 1 *"
retry = 1
template = "sh -c 'echo waiting; while [ ! -e go ]; do sleep 0.05; done; echo done'"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(tmp_path, {"w.toml": SLEEPER}, 'refresh = "1h"\nshutdown_grace = "500ms"\n')


@pytest.fixture
def daemons(site: Path) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [PY, "-m", "scheduler", "run", "--config", str(site / "tomlflow.toml")],
            cwd=site, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "scheduler", *args, "--config", str(site / "tomlflow.toml")],
        cwd=site, capture_output=True, text=True, timeout=60,
    )


def rows(site: Path) -> list[Any]:
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            return list(conn.execute(select(executions).order_by(executions.c.id)).all())
    finally:
        db.close()


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {check.__doc__ or check}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def logs(site: Path, execution_id: int) -> list[str]:
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            query = (
                select(execution_logs.c.line)
                .where(execution_logs.c.execution_id == execution_id)
                .order_by(execution_logs.c.seq)
            )
            return list(conn.execute(query).scalars())
    finally:
        db.close()


def test_kill_9_then_restart_adopts_the_running_command(site: Path, daemons) -> None:
    # Given a queued run of a phase that waits for a file, picked up by a daemon
    assert cli(site, "trigger", "waiter").returncode == 0
    first = daemons()

    def first_running() -> Any:
        """execution 1 running with its pid recorded"""
        found = rows(site)
        return found and found[0].status == "running" and found[0].pid and found[0]

    orphan = wait_for(first_running)

    # When the daemon is killed with -9, its command keeps running
    first.kill()
    first.wait()
    assert alive(orphan.pid)

    # Then a restarted daemon adopts it: nothing is closed, killed or run again ...
    daemons()
    wait_for(lambda: logs(site, 1) == ["waiting"])
    assert [(r.id, r.status) for r in rows(site)] == [(1, "running")]
    assert alive(orphan.pid)

    # ... and when the command completes, its true result and output are recorded once
    (site / "go").touch()

    def completed() -> Any:
        """execution 1 complete"""
        return rows(site)[0].status == "complete"

    wait_for(completed)
    assert [(r.id, r.status, r.exit_code, r.msg) for r in rows(site)] == [(1, "complete", 0, "")]
    assert logs(site, 1) == ["waiting", "done"]


def test_second_scheduler_is_refused_while_the_first_runs(site: Path, daemons) -> None:
    first = daemons()

    def leased() -> bool:
        """the first daemon holds the lease"""
        if not (site / "tomlflow.db").exists():
            return False
        db = Database(f"sqlite:///{site / 'tomlflow.db'}")
        try:
            with db.read() as conn:
                return conn.execute(select(scheduler_lease.c.pid)).scalar() == first.pid
        finally:
            db.close()

    wait_for(leased)

    second = cli(site, "run")

    assert second.returncode == 2
    assert f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.poll() is None


def test_sigterm_cancels_running_execution_and_queues_it_again(site: Path, daemons) -> None:
    assert cli(site, "trigger", "sleeper").returncode == 0
    daemon = daemons()
    wait_for(lambda: rows(site) and rows(site)[0].status == "running")

    daemon.send_signal(signal.SIGTERM)

    assert daemon.wait(timeout=15) == 0
    cancelled, again = rows(site)
    assert cancelled.status == "cancelled"
    assert (again.status, again.attempt, again.trigger) == ("queued", 1, "manual")
    assert not alive(cancelled.pid) if cancelled.pid else True


def test_sighup_refreshes_an_edited_workflow_file(site: Path, daemons) -> None:
    daemon = daemons()
    wait_for(lambda: (site / "tomlflow.db").exists())
    time.sleep(0.5)
    (site / "workflows" / "w.toml").write_text(
        SLEEPER + '\n[[phase]]\ntask = "added"\ndepends_on = "sleeper"\ntemplate = "true"\n'
    )

    os.kill(daemon.pid, signal.SIGHUP)

    def phase_added() -> bool:
        """the new phase in workflow_phases"""
        db = Database(f"sqlite:///{site / 'tomlflow.db'}")
        try:
            with db.read() as conn:
                tasks = conn.execute(select(workflow_phases.c.task)).scalars().all()
        finally:
            db.close()
        return "added" in tasks

    wait_for(phase_added, timeout=10)
