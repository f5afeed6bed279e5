"""Commands that read (status, phases, history, logs, sql, stats) and what they tell a user:
no database is ever created, broken files are named, the scheduler's state is shown."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.cli import main
from scheduler.errors import StoreError
from scheduler.store import history, lease
from scheduler.store.db import Database, NoDatabase, open_existing
from scheduler.store.schema import executions, workflow_files
from scheduler.tasktime import iso
from tests.conftest import SITE_DATABASE, make_site

GOOD = '[[phase]]\ntask = "hello"\nrule = "cron=0 6 * * *"\ntemplate = "echo hi {yyyy}"\n'
BAD = "[[phase]\n"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"good.toml": GOOD}, monkeypatch=monkeypatch)


def database(site: Path) -> Database:
    return Database(f"sqlite:///{site / SITE_DATABASE}")


READ_COMMANDS = [
    ["status"],
    ["phases"],
    ["history"],
    ["history", "hello"],
    ["logs", "1"],
    ["sql", "SELECT 1"],
    ["stats"],
]


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=lambda a: " ".join(a))
def test_read_commands_never_create_a_database(
    site: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # given a site whose database does not exist yet, when a read command runs
    assert main(argv) == 2
    # then one line says so and no file appeared
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: no database at {site / SITE_DATABASE}: run tomlflow init or tomlflow run first"
    )
    assert not (site / SITE_DATABASE).exists()


def test_writing_commands_still_create_it(site: Path) -> None:
    assert main(["trigger", "hello"]) == 0
    assert (site / SITE_DATABASE).is_file()


def test_status_reads_without_writing(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given a database that holds the site's workflows, and a file added since
    assert main(["refresh"]) == 0
    (site / "workflows" / "new.toml").write_text(GOOD.replace("hello", "later"))
    capsys.readouterr()
    # when status runs, then it shows what the scheduler loaded and stored nothing new
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "hello" in out and "later" not in out
    with database(site).read() as conn:
        assert conn.scalar(select(func.count()).select_from(workflow_files)) == 1


def test_the_read_path_is_opened_read_only(site: Path) -> None:
    database(site).close()
    reader = open_existing(f"sqlite:///{site / SITE_DATABASE}")
    try:
        with reader.read() as conn:
            assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
        # the database itself refuses a write on this connection (SQLite mode=ro), even with
        # the query_only guard switched off
        with pytest.raises(StoreError, match="readonly"), reader.read() as conn:
            conn.exec_driver_sql("PRAGMA query_only = 0")
            conn.execute(workflow_files.delete())
    finally:
        reader.close()


def test_a_read_only_database_file_serves_the_read_commands(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a filled database the user may only read
    assert main(["trigger", "hello", "--at", "2024-01-02"]) == 0
    path = site / SITE_DATABASE
    os.chmod(path, 0o444)
    capsys.readouterr()
    try:
        assert main(["history", "--json"]) == 0
        assert [r["task"] for r in json.loads(capsys.readouterr().out)] == ["hello"]
        assert main(["sql", "SELECT count(*) AS n FROM executions", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == [{"n": 1}]
    finally:
        os.chmod(path, 0o644)


def test_an_empty_sqlite_file_is_no_database(site: Path) -> None:
    (site / SITE_DATABASE).write_bytes(b"")
    with pytest.raises(NoDatabase):
        open_existing(f"sqlite:///{site / SITE_DATABASE}")


# -- broken files are named everywhere -----------------------------------------------------------


def test_refresh_exits_1_every_time_while_a_file_is_broken(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "workflows" / "bad.toml").write_text(BAD)
    for _ in range(2):  # the second time nothing changed, and it still fails
        assert main(["refresh"]) == 1
        assert "bad.toml: invalid TOML" in capsys.readouterr().out
    assert main(["refresh", "--json"]) == 1
    assert list(json.loads(capsys.readouterr().out)["errors"]) == ["bad.toml"]


def test_refresh_exits_1_while_a_phase_has_an_error(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "workflows" / "lost.toml").write_text(
        '[[phase]]\ntask = "x"\ndepends_on = "nobody"\ntemplate = "echo"\n'
    )
    assert main(["refresh"]) == 1
    assert main(["refresh"]) == 1
    assert "lost.toml [x]: parent task not found: nobody" in capsys.readouterr().out


def test_validate_exits_1_every_time_while_a_file_is_broken(site: Path) -> None:
    (site / "workflows" / "bad.toml").write_text(BAD)
    assert main(["validate"]) == 1
    assert main(["validate"]) == 1


@pytest.mark.parametrize("command", ["status", "phases"])
def test_status_and_phases_end_naming_each_broken_file(
    site: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / "workflows" / "bad.toml").write_text(BAD)
    main(["refresh"])
    capsys.readouterr()
    assert main([command]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("broken file bad.toml: invalid TOML")
    assert main([command, "--json"]) == 0
    [broken] = json.loads(capsys.readouterr().out)["broken_files"]
    assert broken["file_path"] == "bad.toml" and "invalid TOML" in broken["error"]


# -- status and the scheduler's lease ------------------------------------------------------------


def test_status_after_the_daemon_stopped_says_no_scheduler_runs(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a lease left by a scheduler long gone and a next fire it never reached
    db = database(site)
    main(["refresh"])
    past = datetime.now(UTC) - timedelta(hours=3)
    with db.write() as conn:
        lease.acquire(conn, past)
        state = history.PhaseState("good.toml", "hello", past, past, "0 6 * * *|UTC", past, False)
        history.save_phase_states(conn, [state])
    db.close()
    capsys.readouterr()
    # when status runs, then the stale next fire is not shown as a time, and it says why
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert iso(past)[:10] not in out.split("scheduler:")[0].split("hello", 1)[1]
    assert "no scheduler" in out
    assert f"scheduler: not running (last: pid {os.getpid()}" in out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scheduler"]["running"] is False


def test_status_with_a_scheduler_running_shows_holder_and_heartbeat(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = database(site)
    with db.write() as conn:
        lease.acquire(conn, datetime.now(UTC))  # held by this (live) process
    db.close()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"scheduler: running (pid {os.getpid()} on " in out
    assert "heartbeat " in out
    assert main(["status", "--json"]) == 0
    scheduler = json.loads(capsys.readouterr().out)["scheduler"]
    assert scheduler["running"] is True and scheduler["pid"] == os.getpid()


def test_status_with_no_lease_says_no_scheduler_runs(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database(site).close()
    assert main(["status"]) == 0
    assert "scheduler: not running; cron fires wait for `tomlflow run`" in capsys.readouterr().out


# -- trigger and history -------------------------------------------------------------------------


def test_trigger_prints_the_id_it_queued(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trigger", "hello", "--at", "2024-01-02"]) == 0
    assert capsys.readouterr().out.startswith("queued execution 1: hello for 2024-01-02")
    assert main(["trigger", "hello", "--at", "2024-01-03", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == 2 and data["ids"] == [2]
    with database(site).read() as conn:
        assert conn.scalar(select(executions.c.task_time).where(executions.c.id == 2)).startswith(
            "2024-01-03"
        )


def test_history_of_an_unknown_task_exits_2_naming_it(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database(site).close()
    assert main(["history", "nosuch"]) == 2
    assert capsys.readouterr().err.strip() == "error: no phase with task 'nosuch'"
    # a phase that never ran is not an error: its history is just empty
    assert main(["history", "hello", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_an_existing_database_opens_read_only_on_every_backend(db: Database) -> None:
    # given a migrated database (SQLite here, PostgreSQL under .ci/postgres)
    reader = open_existing(db.url)
    try:
        with reader.read() as conn:
            assert conn.scalar(select(func.count()).select_from(executions)) == 0
        # then the database itself refuses a write on this connection
        with pytest.raises(StoreError, match=r"read-only|readonly"), reader.read() as conn:
            conn.execute(executions.delete())
    finally:
        reader.close()


def test_insert_returning_ids_gives_each_row_its_id_in_order(db: Database) -> None:
    now = datetime(2024, 1, 2, tzinfo=UTC)
    rows = [
        history.NewExecution(f"chain{i}", "w.toml", "hello", now + timedelta(days=i),
                             history.Trigger.MANUAL, f"echo {i}", {}, now)
        for i in range(3)
    ]
    with db.write() as conn:
        ids = history.insert_returning_ids(conn, rows, now)
    with db.read() as conn:
        stored = dict(conn.execute(select(executions.c.id, executions.c.task_id)).all())
    assert [stored[i] for i in ids] == ["chain0", "chain1", "chain2"]
