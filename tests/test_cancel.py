"""``tomlflow cancel ID``: a queued execution at once, a running one through its scheduler.

The running case uses a real engine, real processes and a ``setsid`` grandchild: the whole tree
must die, and nothing may follow (no child, no retry, no requeue).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.clock import SystemClock
from scheduler.config import load_config
from scheduler.engine import Engine
from scheduler.executors import LocalExecutor
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Execution, Status
from scheduler.store.schema import cancel_requests, executions
from tests.conftest import make_site
from tests.conftest import run_main as cli

TREE = """
[[phase]]
task = "tree"
rule = "cron=0 0 1 1 *"
retry = 2
template = "sh -c 'setsid sleep 30 & echo $!; sleep 30'"

[[phase]]
task = "after"
depends_on = "tree"
template = "true"
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"t.toml": TREE}, "max_workers = 2\n", monkeypatch)


def rows(site: Path) -> list[Execution]:
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            found = conn.execute(select(executions).order_by(executions.c.id))
            return [Execution.from_row(r) for r in found]
    finally:
        db.close()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_queued_execution_is_cancelled_at_once(site: Path, capsys) -> None:
    assert cli("trigger", "tree") == 0
    [queued] = rows(site)
    capsys.readouterr()

    assert cli("cancel", str(queued.id), "--json") == 0

    assert json.loads(capsys.readouterr().out)["cancel"] == "cancelled"
    [row] = rows(site)
    assert (row.status, row.msg) == (Status.CANCELLED, "cancelled by user")


def test_cancelling_an_ended_execution_exits_1_and_an_unknown_one_2(site: Path, capsys) -> None:
    assert cli("trigger", "tree") == 0
    [queued] = rows(site)
    assert cli("cancel", str(queued.id)) == 0

    assert cli("cancel", str(queued.id)) == 1
    assert "already ended (cancelled)" in capsys.readouterr().out
    assert cli("cancel", "999") == 2
    assert "no execution with id 999" in capsys.readouterr().err


def test_a_running_execution_is_cancelled_with_its_whole_tree_and_releases_nothing(
    site: Path,
) -> None:
    # Given a running execution whose command left a setsid grandchild
    assert cli("trigger", "tree") == 0
    config = load_config(str(site / "tomlflow.toml"))
    clock = SystemClock()  # the row was queued by the command line, at the real time
    db = Database(config.database)
    executor = LocalExecutor.for_config(config, clock.now)
    engine = Engine(config, db, executor, clock)
    try:
        engine.start()
        engine.tick(clock.now())
        [row] = rows(site)
        out = Path(executor.spool.prefix(row.id) + ".out")
        deadline = time.monotonic() + 10
        while not (out.exists() and out.read_text().strip()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        grandchild = int(out.read_text())

        # When a user cancels it
        assert cli("cancel", str(row.id)) == 0

        # Then the scheduler running it kills the whole tree and records the cancel
        while rows(site)[0].status is Status.RUNNING:
            assert time.monotonic() < deadline
            engine.wait(clock.now() + timedelta(milliseconds=100))
            engine.tick(clock.now())
        engine.tick(clock.now())
        with db.read() as conn:
            assert conn.execute(select(cancel_requests)).all() == []
    finally:
        executor.shutdown(0)
        engine.stop()
        db.close()

    [cancelled] = rows(site)  # no retry, no child, not queued again
    assert (cancelled.status, cancelled.msg) == (Status.CANCELLED, "cancelled by user")
    end = time.monotonic() + 5
    while alive(grandchild):
        assert time.monotonic() < end, "the setsid grandchild survived"
        time.sleep(0.02)


def test_request_cancel_cancels_queued_rows_and_records_one_request_per_running_one(
    db: Database,
) -> None:
    at = datetime(2024, 1, 2, tzinfo=UTC)
    new = history.NewExecution("t", "w.toml", "x", at, history.Trigger.MANUAL, "", {}, at)
    with db.write() as conn:
        [running] = history.insert_claimed(conn, [new], at)
        history.insert_executions(conn, [new], at)
        queued = history.queued_ready(conn, at, 10)[0]
        said = [
            history.request_cancel(conn, running.id, at, "alice")[0],
            history.request_cancel(conn, running.id, at, "alice")[0],
            history.request_cancel(conn, queued.id, at)[0],
            history.request_cancel(conn, queued.id, at)[0],
            history.request_cancel(conn, 999, at)[0],
        ]
        requested = history.cancel_requested(conn)
        history.clear_cancel_requests(conn, requested)
        left = history.cancel_requested(conn)
        cancelled = history.get_execution(conn, queued.id)

    assert said == [
        history.Cancel.REQUESTED,
        history.Cancel.REQUESTED,
        history.Cancel.CANCELLED,
        history.Cancel.ENDED,
        history.Cancel.UNKNOWN,
    ]
    assert (requested, left) == ([running.id], [])
    assert cancelled is not None
    assert (cancelled.status, cancelled.msg) == (Status.CANCELLED, "cancelled by user")
