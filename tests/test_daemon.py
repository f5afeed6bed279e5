"""The daemon as a real process: kill -9 recovery, the lease, SIGTERM and SIGHUP.

Each test starts ``python -m scheduler run`` on a temporary folder and reads the outcome from
the database, as an operator would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.store.db import Database
from scheduler.store.schema import execution_logs, scheduler_lease, workflow_phases
from tests.conftest import make_site, wait_for
from tests.conftest import site_cli as cli
from tests.conftest import site_rows as rows

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


def holds_lease(site: Path, daemon: subprocess.Popen[str]) -> Callable[[], bool]:
    """A check that ``daemon`` holds the lease: it has started (its signal handlers are set)."""

    def leased() -> bool:
        """the daemon holds the lease"""
        if not (site / "tomlflow.db").exists():
            return False
        db = Database(f"sqlite:///{site / 'tomlflow.db'}")
        try:
            with db.read() as conn:
                return conn.execute(select(scheduler_lease.c.pid)).scalar() == daemon.pid
        finally:
            db.close()

    return leased


def test_second_scheduler_is_refused_while_the_first_runs(site: Path, daemons) -> None:
    first = daemons()
    wait_for(holds_lease(site, first))

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
    wait_for(holds_lease(site, daemon))  # started: a SIGHUP before its handler would end it
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


def chains(width: int, length: int, seconds: float) -> str:
    """A root and ``width`` chains of ``length`` links below it; every phase sleeps a while."""
    text = f'[[phase]]\ntask = "root"\nrule = "cron=0 0 1 1 *"\ntemplate = "sleep {seconds}"\n'
    for c in range(width):
        for link in range(length):
            parent = f"c{c}l{link - 1}" if link else "root"
            text += (
                f'\n[[phase]]\ntask = "c{c}l{link}"\ndepends_on = "{parent}"\n'
                f'template = "sleep {seconds}"\n'
            )
    return text


def test_kill_9_loop_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    # Given 21 phases (a root and four chains of five) that each sleep 0.1 s, on 4 workers
    site = make_site(
        tmp_path / "loop",
        {"w.toml": chains(4, 5, 0.1)},
        'refresh = "1h"\nmax_workers = 4\nshutdown_grace = "500ms"\n',
    )
    config = ["--config", str(site / "tomlflow.toml")]
    assert cli(site, "trigger", "root").returncode == 0

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [PY, "-m", "scheduler", "run", *config],
            cwd=site, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        return proc

    started: list[subprocess.Popen[str]] = []
    try:
        # When the daemon is killed with -9 three times while commands run, and restarted
        for kills in range(3):
            daemon = start()

            def busy(done: int = kills * 4) -> bool:
                """commands running after some progress"""
                found = rows(site)
                finished = sum(r.status == "complete" for r in found)
                return finished >= done and any(r.status == "running" for r in found)

            wait_for(busy, timeout=20)
            daemon.kill()
            daemon.wait()
        start()

        def settled() -> bool:
            """every phase complete and nothing running or queued"""
            found = rows(site)
            return len({r.task for r in found}) == 21 and all(
                r.status not in ("running", "queued") for r in found
            )

        wait_for(settled, timeout=30)
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    # Then every phase completed exactly once, with no error and nothing stuck
    found = rows(site)
    assert sorted(r.task for r in found) == sorted({r.task for r in found})  # one row per phase
    assert {r.status for r in found} == {"complete"}
    assert {r.attempt for r in found} == {1}
