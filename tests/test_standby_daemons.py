"""Standby schedulers as real processes under different host names, on one database (PostgreSQL
when the suite is given a server, else a SQLite file): a standby takes over from a holder killed
with -9, and a holder that was only frozen steps down when it wakes. Every second a cron phase
fires with catchup=all, so "nothing lost, nothing twice" is a contiguous run of task times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.store.db import Database
from scheduler.store.schema import executions, scheduler_lease
from scheduler.tasktime import from_iso
from tests import conftest

PY = sys.executable
WORKFLOW = """
[[phase]]
task = "tick"
rule = "cron=* * * * * *&catchup=all"
template = "true"
"""


@pytest.fixture
def site(tmp_path: Path, db: Database) -> Path:
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "w.toml").write_text(WORKFLOW)
    (tmp_path / "tomlflow.toml").write_text(
        f'[scheduler]\nworkflows = "workflows"\ndatabase = "{db.url}"\nrefresh = "1h"\n'
        'shutdown_grace = "500ms"\n'
    )
    return tmp_path


@pytest.fixture
def schedulers(site: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(host: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [PY, "-m", "scheduler", "run", *args, "--config", str(site / "tomlflow.toml")],
            cwd=site, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TOMLFLOW_HOSTNAME": host},
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.communicate()



# Schedulers taking over from each other take seconds: wait longer than conftest's default.
wait_for = partial(conftest.wait_for, timeout=30.0, poll=0.1)


def holder(db: Database) -> str | None:
    with db.read() as conn:
        return conn.execute(select(scheduler_lease.c.host)).scalar()


def fires(db: Database) -> list[datetime]:
    """The task times of the cron fires: rows with a fire key. A run a shutdown cancelled is
    queued again as a cron row of the same task time but no fire key: not a second fire."""
    with db.read() as conn:
        rows = conn.execute(
            select(executions.c.task_time).where(executions.c.fire_key.is_not(None))
        ).scalars()
        return sorted(from_iso(t) for t in rows)


def assert_contiguous_and_settled(db: Database) -> None:
    """Every second from the first fire to the last fired exactly once; nothing left running."""
    times = fires(db)
    assert len(times) >= 2
    assert len(set(times)) == len(times), "a fire recorded twice"
    gaps = [b - a for a, b in pairwise(times)]
    assert set(gaps) == {timedelta(seconds=1)}, f"fires lost: {gaps}"
    with db.read() as conn:
        statuses = conn.execute(select(executions.c.status)).scalars().all()
    assert "running" not in statuses


def test_a_standby_takes_over_from_a_holder_killed_with_9(
    site: Path, db: Database, schedulers: Callable[..., subprocess.Popen[str]]
) -> None:
    first = schedulers("host-a")
    wait_for(lambda: holder(db) == "host-a")
    standby = schedulers("host-b", "--standby")
    wait_for(lambda: len(fires(db)) >= 3)
    assert holder(db) == "host-a"  # the standby only waits while the holder beats
    first.kill()  # -9: no lease given up, no chance to say anything
    first.communicate()
    wait_for(lambda: holder(db) == "host-b")
    count = len(fires(db))
    wait_for(lambda: len(fires(db)) >= count + 2)
    standby.send_signal(signal.SIGTERM)
    out, _ = standby.communicate(timeout=30)
    assert standby.returncode == 0
    assert "standing by: pid" in out and "host-a" in out
    assert_contiguous_and_settled(db)


def test_a_frozen_holder_steps_down_when_it_comes_back(
    site: Path, db: Database, schedulers: Callable[..., subprocess.Popen[str]]
) -> None:
    first = schedulers("host-a")
    wait_for(lambda: holder(db) == "host-a")
    standby = schedulers("host-b", "--standby")
    wait_for(lambda: len(fires(db)) >= 2)
    os.kill(first.pid, signal.SIGSTOP)  # frozen: alive, but silent
    wait_for(lambda: holder(db) == "host-b")
    os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=30)
    assert first.returncode == 2
    assert "stepping down" in err and "host-b" in err
    count = len(fires(db))
    wait_for(lambda: len(fires(db)) >= count + 2)
    assert holder(db) == "host-b"
    standby.send_signal(signal.SIGTERM)
    standby.communicate(timeout=30)
    assert_contiguous_and_settled(db)
