"""``tomlflow sql`` and ``tomlflow stats``: output forms, and writes refused by the database."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Finish, NewExecution, Status, Trigger

T0 = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A config whose database holds three executions of ``load:daily`` (one failed)."""
    (tmp_path / "workflows").mkdir()
    config = tmp_path / "tomlflow.toml"
    config.write_text('[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///t.db"\n')
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    for n, status in enumerate([Status.COMPLETE, Status.ERROR, Status.COMPLETE]):
        at = T0 + timedelta(hours=n)
        row = NewExecution(task_id=f"c{n}", file_path="etl.toml", task="load:daily", task_time=at,
                           trigger=Trigger.CRON, info="run.sh", meta={}, not_before=at)
        with db.write() as conn:
            history.insert_executions(conn, [row], at)
            history.record_finishes(conn, [Finish(n + 1, status, "exit 3" if n == 1 else "",
                                                  3 if n == 1 else 0, at,
                                                  at + timedelta(seconds=10 * (n + 1)))])
    db.close()
    return config


def fingerprint(path: Path) -> str:
    """A hash of the database's whole content and schema, and its journal mode."""
    conn = sqlite3.connect(path)
    try:
        dump = "\n".join(conn.iterdump())
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return hashlib.sha256((dump + mode).encode()).hexdigest()


def run(config: Path, *args: str) -> int:
    return main([*args, "--config", str(config)])


def test_select_prints_a_table(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(project, "sql", "SELECT id, task, status FROM executions ORDER BY id")
    out = capsys.readouterr().out
    assert code == 0
    assert "load:daily" in out and "error" in out and "status" in out


def test_json_and_csv(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT id, msg, exit_code FROM executions WHERE status = 'error'"
    assert run(project, "sql", sql, "--json") == 0
    assert json.loads(capsys.readouterr().out) == [{"id": 2, "msg": "exit 3", "exit_code": 3}]
    assert run(project, "sql", sql, "--csv") == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        ["id", "msg", "exit_code"], ["2", "exit 3", "3"]]


def test_a_colon_in_a_string_is_not_a_parameter(project: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "sql", "SELECT COUNT(*) AS n FROM executions WHERE task = 'load:daily'",
               "--json") == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 3}]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO executions (task_id, file_path, task, topic, trigger, status, created_at,"
        " not_before) VALUES ('x', 'f', 't', 't', 'manual', 'queued', 'a', 'b')",
        "UPDATE executions SET status = 'complete'",
        "DELETE FROM executions",
        "DROP VIEW phase_status",
        "CREATE TABLE evil (x INTEGER)",
        "CREATE TEMP TABLE evil (x INTEGER)",
        "ATTACH DATABASE 'other.db' AS other",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
        "VACUUM",
        "REPLACE INTO schema_version VALUES (1, 'x')",
        "WITH x AS (SELECT 1) DELETE FROM execution_logs",
    ],
)
def test_writes_are_refused_and_nothing_changes(
    project: Path, statement: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db_file = project.parent / "t.db"
    before = fingerprint(db_file)
    code = run(project, "sql", statement)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: query failed:") and err.count("\n") == 1
    assert fingerprint(db_file) == before
    assert not (project.parent / "other.db").exists()


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM no_such_table", "no such table"),
        ("SELECT 1; SELECT 2", "one statement"),
    ],
)
def test_bad_sql_is_one_line_and_exit_2(project: Path, statement: str, message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "sql", statement) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_max_rows_stops_and_says_so(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "sql", "SELECT id FROM executions ORDER BY id", "--json",
               "--max-rows", "2") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [{"id": 1}, {"id": 2}]
    assert "stopped after 2 rows" in captured.err


def test_stats_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "stats", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    [phase] = data["phases"]
    assert (phase["task"], phase["runs"], phase["complete"], phase["error"]) == (
        "load:daily", 3, 2, 1)
    assert phase["success_rate"] == pytest.approx(66.7)
    assert phase["avg_seconds"] == pytest.approx(20, abs=1e-3)
    assert phase["max_seconds"] == pytest.approx(30, abs=1e-3)
    assert [f["id"] for f in data["recent_failures"]] == [2]


def test_stats_since_a_time_and_bad_since(project: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "stats", "--json", "--since", "2024-01-02T04:30:00Z") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["phases"][0]["runs"] == 1 and data["recent_failures"] == []
    assert run(project, "stats", "--since", "soon") == 2
    assert "--since" in capsys.readouterr().err


def test_stats_table(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(project, "stats") == 0
    out = capsys.readouterr().out
    assert "load:daily" in out and "66.7%" in out and "recent failures" in out
    assert "exit 3" in out
