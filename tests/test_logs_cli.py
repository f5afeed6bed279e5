"""``tomlflow logs ID --follow/--tail`` and ``logs --search`` through ``scheduler.cli.main``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.cli import logview
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Finish, LogRow, NewExecution, Status, Trigger
from tests.conftest import make_site
from tests.conftest import run_main as cli

T = datetime(2024, 1, 2, tzinfo=UTC)
WORKFLOW = '[[phase]]\ntask = "etl:load"\nrule = "cron=0 0 * * *"\ntemplate = "true"\n'


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"p.toml": WORKFLOW}, "", monkeypatch)


@pytest.fixture
def db(site: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{site / 'tomlflow.db'}")
    yield database
    database.close()


def running(db: Database, task: str = "etl:load") -> int:
    """A running execution; returns its id."""
    row = NewExecution("c1", "p.toml", task, T, Trigger.CRON, "true", {}, T)
    with db.write() as conn:
        (claimed,) = history.insert_claimed(conn, [row], T)
    return claimed.id


def add_lines(db: Database, execution_id: int, first: int, *lines: str) -> None:
    rows = [
        LogRow(execution_id, first + i, T + timedelta(seconds=first + i), "stdout", text)
        for i, text in enumerate(lines)
    ]
    with db.write() as conn:
        history.insert_logs(conn, rows)


def finish(db: Database, execution_id: int, status: Status) -> None:
    with db.write() as conn:
        history.record_finishes(conn, [Finish(execution_id, status, "", 0, T, T)])


def test_tail_prints_only_the_last_lines(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    # given an execution with five lines
    eid = running(db)
    add_lines(db, eid, 1, "one", "two", "three", "four", "five")
    # when its last two are asked for
    assert cli("logs", str(eid), "--tail", "2") == 0
    # then only those are printed, after the header
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["four", "five"]
    assert cli("logs", str(eid), "--tail", "2", "--json") == 0
    assert [x["line"] for x in json.loads(capsys.readouterr().out)["logs"]] == ["four", "five"]


@pytest.mark.parametrize(("status", "code"), [(Status.COMPLETE, 0), (Status.ERROR, 1)])
def test_follow_prints_lines_as_they_arrive_and_exits_with_the_result(
    db: Database,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    status: Status,
    code: int,
) -> None:
    # given a running execution with one line so far
    eid = running(db)
    add_lines(db, eid, 1, "starting")
    # and, while `logs --follow` waits, the engine stores more lines and then the end
    events = iter(
        [
            lambda: add_lines(db, eid, 2, "working"),
            lambda: None,  # a poll that finds nothing new
            lambda: (add_lines(db, eid, 3, "last words"), finish(db, eid, status)),
        ]
    )
    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        next(events)()

    monkeypatch.setattr(logview, "_sleep", fake_sleep)
    # when it is followed
    result = cli("logs", str(eid), "--follow")
    # then every line is printed once, in order, and the exit code is the result's
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["starting", "working", "last words", f"# ended: {status.value}"]
    assert result == code
    assert waits == [logview.POLL_SECONDS] * 3


def test_follow_json_streams_one_object_per_line(
    db: Database, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    eid = running(db)
    add_lines(db, eid, 1, "a", "b", "c")
    monkeypatch.setattr(logview, "_sleep", lambda _s: finish(db, eid, Status.COMPLETE))
    assert cli("logs", str(eid), "--follow", "--tail", "1", "--json") == 0
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["line"] for x in out] == ["c"]


def test_logs_of_an_unknown_id_is_bad_input(db: Database) -> None:
    assert cli("logs", "999", "--follow") == 2


def test_logs_without_id_or_search_is_a_usage_error(db: Database) -> None:
    assert cli("logs") == 2
    assert cli("logs", "etl:load") == 2
    assert cli("logs", "1", "--since", "2h") == 2


def test_search_prints_id_task_task_time_timestamp_and_line(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    # given two executions' output
    first, second = running(db), running(db, "etl:other")
    add_lines(db, first, 1, "connected to warehouse", "loaded 10 rows")
    add_lines(db, second, 1, "Warehouse timeout after 30s")
    # when a word is searched for
    assert cli("logs", "--search", "warehouse", "--json") == 0
    hits = json.loads(capsys.readouterr().out)
    # then both lines match, case-insensitively, newest first, with their execution
    assert [(h["execution_id"], h["line"]) for h in hits] == [
        (second, "Warehouse timeout after 30s"),
        (first, "connected to warehouse"),
    ]
    assert hits[0]["task"] == "etl:other"
    assert hits[0]["task_time"] == "2024-01-02T00:00:00.000000Z"
    assert hits[0]["ts"] == "2024-01-02T00:00:01.000000Z"
    # and a task narrows it; the table shows the same columns
    assert cli("logs", "--search", "warehouse", "etl:load") == 0
    out = capsys.readouterr().out
    assert "connected to warehouse" in out
    assert "timeout" not in out
    assert str(first) in out and "2024-01-02 00:00:00" in out


def test_search_since_and_until_filter_on_the_line_time(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    eid = running(db)
    add_lines(db, eid, 1, "tick one", "tick two", "tick three")  # at 00:00:01 .. :03
    assert (
        cli(
            "logs",
            "--search",
            "tick",
            "--since",
            "2024-01-02T00:00:02Z",
            "--until",
            "2024-01-02T00:00:03Z",
            "--json",
        )
        == 0
    )
    assert [h["line"] for h in json.loads(capsys.readouterr().out)] == ["tick two"]


def test_search_of_nothing_is_a_usage_error(db: Database) -> None:
    assert cli("logs", "--search", "  ") == 2
