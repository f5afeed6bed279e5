"""``tomlflow mark ID complete|error``: store rules (on every backend) and the command."""

from __future__ import annotations

import getpass
import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from scheduler.store import history, reruns
from scheduler.store.db import Database
from scheduler.store.history import Execution, NewExecution, Status, Trigger
from scheduler.store.schema import executions, scheduler_lease
from scheduler.tasktime import iso
from tests.conftest import make_site
from tests.conftest import run_main as cli

T = datetime(2024, 1, 2, tzinfo=UTC)
PIPELINE = """
[[phase]]
task = "root"
rule = "cron=0 0 * * *"
retry = 2
template = "false"

[[phase]]
task = "a"
depends_on = "root"
template = "echo a {meta:day}"

[[phase]]
task = "b"
depends_on = "root"
template = "echo b"
"""


def new(task: str, status: Status, meta: dict[str, str] | None = None) -> NewExecution:
    return NewExecution(
        "c1", "p.toml", task, T, Trigger.CRON, "false", meta or {}, T, status=status, msg="exit 1"
    )


def insert_rows(db: Database, *rows: NewExecution) -> list[int]:
    with db.write() as conn:
        history.insert_executions(conn, rows, T)
        ids = conn.execute(select(executions.c.id).order_by(executions.c.id)).scalars().all()
    return list(ids[-len(rows) :])


def all_rows(db: Database) -> list[Execution]:
    with db.read() as conn:
        query = select(executions).order_by(executions.c.id)
        return [Execution.from_row(r) for r in conn.execute(query)]


def child(parent: Execution) -> list[NewExecution]:
    return [new("a", Status.QUEUED)]


# -- the store, on every backend ---------------------------------------------------------------


def test_mark_complete_releases_in_the_same_transaction(db: Database) -> None:
    (eid,) = insert_rows(db, new("root", Status.ERROR))
    with db.write() as conn:
        marked = reruns.mark(conn, eid, Status.COMPLETE, "marked complete by ann", T, child)
    assert (marked.changed, marked.released, marked.before.status) == (True, 1, Status.ERROR)
    root, released = all_rows(db)
    assert (root.status, root.msg) == (Status.COMPLETE, "marked complete by ann")
    assert root.ended_at is not None
    assert (released.task, released.status) == ("a", Status.QUEUED)


def test_mark_error_releases_nothing(db: Database) -> None:
    (eid,) = insert_rows(db, new("root", Status.COMPLETE))
    with db.write() as conn:
        marked = reruns.mark(conn, eid, Status.ERROR, "marked error by ann", T, child)
    assert marked.released == 0
    assert [r.status for r in all_rows(db)] == [Status.ERROR]


def test_marking_the_same_result_again_changes_nothing(db: Database) -> None:
    (eid,) = insert_rows(db, new("root", Status.COMPLETE))
    with db.write() as conn:
        marked = reruns.mark(conn, eid, Status.COMPLETE, "again", T, child)
    assert not marked.changed
    assert [(r.status, r.msg) for r in all_rows(db)] == [(Status.COMPLETE, "exit 1")]


def test_a_queued_execution_is_refused(db: Database) -> None:
    (eid,) = insert_rows(db, new("root", Status.QUEUED))
    with pytest.raises(reruns.MarkRefused, match="queued"), db.write() as conn:
        reruns.mark(conn, eid, Status.COMPLETE, "x", T, child)
    assert [r.status for r in all_rows(db)] == [Status.QUEUED]


def test_a_running_execution_is_refused_while_a_live_scheduler_runs_it(db: Database) -> None:
    # given a running execution and a scheduler whose heartbeat is fresh
    (eid,) = insert_rows(db, new("root", Status.RUNNING))
    with db.write() as conn:
        conn.execute(
            insert(scheduler_lease).values(
                name="scheduler", host="elsewhere", pid=1, since=iso(T), heartbeat=iso(T)
            )
        )
    with pytest.raises(reruns.MarkRefused, match="cancel it first"), db.write() as conn:
        reruns.mark(conn, eid, Status.COMPLETE, "x", T + timedelta(seconds=5), child)
    # when no scheduler has been heard of for a while, it is stuck: marking it is allowed
    with db.write() as conn:
        marked = reruns.mark(conn, eid, Status.COMPLETE, "x", T + timedelta(hours=1), child)
    assert marked.changed


# -- the command --------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"p.toml": PIPELINE}, "", monkeypatch)


def test_mark_complete_releases_children_and_says_who(
    site_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a root run that failed after emitting meta
    (eid,) = insert_rows(site_db, new("root", Status.ERROR, {"day": "tue"}))
    # when an operator marks it complete
    assert cli("mark", str(eid), "complete", "--msg", "fixed by hand") == 0
    assert "released 2 child runs" in capsys.readouterr().out
    # then its children are queued as a real completion would queue them
    root, *children = all_rows(site_db)
    assert root.status is Status.COMPLETE
    assert sorted((c.task, c.trigger, c.parent_execution_id) for c in children) == [
        ("a", Trigger.DEPENDENCY, eid),
        ("b", Trigger.DEPENDENCY, eid),
    ]
    assert next(c for c in children if c.task == "a").info == "echo a tue"
    assert {c.task_id for c in children} == {"c1"}
    # and history shows who marked it and why
    assert cli("history", "root", "--json") == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["msg"] == f"marked complete by {getpass.getuser()}: fixed by hand"


def test_mark_error_queues_no_retry(site_db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    # given a completed root whose phase allows two retries
    (eid,) = insert_rows(site_db, new("root", Status.COMPLETE))
    assert cli("mark", str(eid), "error", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["was"], out["status"], out["released"]) == ("complete", "error", 0)
    assert [(r.status, r.attempt) for r in all_rows(site_db)] == [(Status.ERROR, 1)]


def test_mark_unknown_is_bad_input_and_queued_is_refused(
    site_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("mark", "999", "complete") == 2
    (eid,) = insert_rows(site_db, new("root", Status.QUEUED))
    assert cli("mark", str(eid), "complete") == 1
    assert "queued" in capsys.readouterr().err
    assert cli("mark", str(eid), "success") == 2


def test_mark_refuses_a_running_execution_of_this_live_scheduler(site_db: Database) -> None:
    (eid,) = insert_rows(site_db, new("root", Status.RUNNING))
    now = iso(datetime.now(UTC))
    with site_db.write() as conn:
        conn.execute(
            insert(scheduler_lease).values(
                name="scheduler",
                host=socket.gethostname(),
                pid=os.getpid(),
                since=now,
                heartbeat=now,
            )
        )
    assert cli("mark", str(eid), "complete") == 1


def test_a_user_without_a_name_is_named_by_uid(
    site_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nameless() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(getpass, "getuser", nameless)
    (eid,) = insert_rows(site_db, new("root", Status.COMPLETE))
    assert cli("mark", str(eid), "error") == 0
    assert all_rows(site_db)[0].msg == f"marked error by uid {os.getuid()}"
