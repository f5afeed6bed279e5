"""``tomlflow doctor``: each finding one line with what to do; exit 1 when one needs action."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from scheduler import doctor
from scheduler.cli import main
from scheduler.config import Config
from scheduler.doctor import Level
from scheduler.store import health, history
from scheduler.store.db import Database
from scheduler.store.history import LogRow, NewExecution, Trigger
from scheduler.store.schema import scheduler_lease, workflow_files
from scheduler.store.search import FTS_TABLE
from scheduler.tasktime import iso
from tests.conftest import make_site
from tests.conftest import run_main as cli

WORKFLOW = '[[phase]]\ntask = "etl"\nrule = "cron=0 0 * * *"\ntemplate = "true"\n'


def levels(report: doctor.Report) -> dict[str, Level]:
    return {f.check: f.level for f in report.findings}


def hold_lease(db: Database, heartbeat: datetime, pid: int | None = None) -> None:
    with db.write() as conn:
        conn.execute(
            insert(scheduler_lease).values(
                name="scheduler",
                host=socket.gethostname(),
                pid=pid or os.getpid(),
                since=iso(heartbeat),
                heartbeat=iso(heartbeat),
            )
        )


def test_a_healthy_database_on_every_backend(db: Database, tmp_path: Path) -> None:
    # given a database with a live scheduler and nothing wrong
    now = datetime.now(UTC)
    hold_lease(db, now)
    config = Config(workflows=tmp_path, database=db.url)
    # when examined, then everything is ok and the tables are counted
    report = doctor.examine(config, now)
    assert not report.needs_action, report.findings
    assert {"database", "schema", "scheduler", "workflows", "queue"} <= set(levels(report))
    assert [t.name for t in report.tables][:4] == [
        "workflow_files",
        "workflow_phases",
        "phase_state",
        "executions",
    ]
    if not db.is_sqlite:
        assert all(t.bytes for t in report.tables)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"p.toml": WORKFLOW}, "", monkeypatch)


def test_no_database_is_reported_and_not_created(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("doctor") == 1
    out = capsys.readouterr().out
    assert "fail  database" in out and "tomlflow run" in out
    assert not (site / "tomlflow.db").exists()


def test_healthy_site_exits_0_with_one_line_per_finding(
    site_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    hold_lease(site_db, datetime.now(UTC))
    assert cli("doctor") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[:3]] == ["database", "schema", "quick_check"]
    assert lines[-1].startswith("info  tables") and "executions 0" in lines[-1]
    assert all(line.split()[0] in ("ok", "info") for line in lines)


def test_problems_each_say_what_to_do(
    site_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    # given a scheduler that stopped heartbeating, a file that failed to load, and a run
    # ready to start for an hour
    hold_lease(site_db, now - timedelta(minutes=10), pid=1)
    with site_db.write() as conn:
        conn.execute(
            insert(workflow_files).values(
                file_path="p.toml", file_hash="0" * 32, error="invalid TOML: line 3"
            )
        )
        late = now - timedelta(hours=1)
        history.insert_executions(
            conn, [NewExecution("c", "p.toml", "etl", late, Trigger.MANUAL, "", {}, late)], late
        )
    # when the doctor looks, it exits 1 and every finding that needs action says what to do
    assert cli("doctor", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    found = {f["check"]: f for f in report["findings"]}
    assert report["ok"] is False
    assert found["scheduler"]["level"] == "fail"
    assert "tomlflow run" in found["scheduler"]["action"]
    assert found["workflow file"]["detail"] == "p.toml: invalid TOML: line 3"
    assert found["queue"]["level"] == "warn"
    assert found["queue"]["detail"].startswith("1 ready to start")
    assert all(f["action"] for f in report["findings"] if f["level"] != "ok")
    assert next(t for t in report["tables"] if t["name"] == "executions")["rows"] == 1


def test_a_failed_integrity_check_is_a_failure(
    site_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "quick_check", lambda _conn: ["row 5 missing from index ix"])
    config = Config(workflows=Path("workflows").absolute(), database=site_db.url)
    report = doctor.examine(config, datetime.now(UTC))
    (finding,) = [f for f in report.findings if f.check == "quick_check"]
    assert (finding.level, finding.detail) == (Level.FAIL, "row 5 missing from index ix")
    assert "backup" in finding.action


def test_an_unreachable_server_is_one_line_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pg.toml"
    config.write_text('[scheduler]\ndatabase = "postgresql+psycopg://u:s3cret@127.0.0.1:1/x"\n')
    assert main(["doctor", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "fail  database" in out and "s3cret" not in out


@pytest.mark.parametrize(
    ("size", "text"), [(512, "512 B"), (3277, "3.2 KB"), (43_000_000, "41.0 MB")]
)
def test_human_sizes(size: int, text: str) -> None:
    assert doctor.human(size) == text


def test_a_search_index_out_of_step_is_found(site_db: Database) -> None:
    # given a line deleted behind the index's back (its trigger gone, as after a bad restore)
    with site_db.write() as conn:
        history.insert_logs(conn, [LogRow(1, 1, datetime.now(UTC), "stdout", "orphan words")])
        conn.exec_driver_sql(f"DROP TRIGGER trg_{FTS_TABLE}_delete")
        conn.exec_driver_sql("DELETE FROM execution_logs")
    config = Config(workflows=Path("workflows").absolute(), database=site_db.url)
    report = doctor.examine(config, datetime.now(UTC))
    (finding,) = [f for f in report.findings if f.check == "search index"]
    assert finding.level is Level.WARN and "rebuild" in finding.action
