"""``file_reports``: every file reported by ``tomlflow file`` is recorded, matched or not, in the
transaction that queues its executions. (The watched folder's reports: tests/test_watched.py.)
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.cli import main
from scheduler.errors import StoreError
from scheduler.store import file_reports as reports_store
from scheduler.store.db import Database
from scheduler.store.file_reports import FileReport, Source
from scheduler.store.history import NewExecution, Status, Trigger
from scheduler.store.schema import executions, file_reports
from tests.conftest import SITE_DATABASE, make_site


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config and a workflow whose phase takes the csv files of inbox/<day>/."""
    (tmp_path / "inbox").mkdir()
    ingest = textwrap.dedent(f"""
        [[phase]]
        task = "ingest"
        rule = "files={tmp_path / "inbox"}/*/*.csv"
        template = "echo {{meta:file}}"
        """)
    yield make_site(tmp_path, {"ingest.toml": ingest}, monkeypatch=monkeypatch)


def rows_of(site: Path, table: Any) -> list[Any]:
    db = Database(f"sqlite:///{site / SITE_DATABASE}")
    try:
        with db.read() as conn:
            return list(conn.execute(select(table).order_by(table.c.id)))
    finally:
        db.close()


def test_a_matched_file_is_recorded_with_what_it_queued(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = datetime.now(UTC).isoformat()
    assert main(["file", "inbox/2024-05-06/a.csv"]) == 0
    assert "queued ingest (ingest.toml) for 2024-05-06T00:00:00.000000Z" in capsys.readouterr().out
    (report,) = rows_of(site, file_reports)
    (execution,) = rows_of(site, executions)
    full = str(site / "inbox" / "2024-05-06" / "a.csv")
    assert (report.path, report.source, report.task_time, report.queued) == (
        full, "command", "2024-05-06T00:00:00.000000Z", 1,
    )  # fmt: skip
    # reported_at is the executions' format and the same moment as the row it queued
    assert report.reported_at == execution.created_at
    assert len(report.reported_at) == len("2024-01-02T13:00:00.000000Z")
    assert report.reported_at.endswith("Z") and report.reported_at[:19] >= before[:19]
    assert json.loads(execution.meta)["file"] == full


def test_an_unmatched_file_is_recorded_and_exits_1(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["file", "gs://bucket/elsewhere/a.txt"]) == 1
    assert "no phase matches gs://bucket/elsewhere/a.txt" in capsys.readouterr().err
    (report,) = rows_of(site, file_reports)
    assert (report.path, report.source, report.task_time, report.queued) == (
        "gs://bucket/elsewhere/a.txt", "command", None, 0,
    )  # fmt: skip
    assert rows_of(site, executions) == []


def test_report_and_executions_commit_together(
    site: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given recording the report fails
    def fail(*_args: object) -> None:
        raise StoreError("sqlite:///t.db", "disk I/O error")

    monkeypatch.setattr(reports_store, "record", fail)
    # When a matching file is reported, then the command fails and queued nothing either
    assert main(["file", "inbox/2024-05-06/a.csv"]) != 0
    assert "disk I/O error" in capsys.readouterr().err
    assert rows_of(site, executions) == []
    assert rows_of(site, file_reports) == []


def test_each_report_is_a_row(site: Path) -> None:
    for path in ("inbox/2024-05-06/a.csv", "inbox/2024-05-06/a.csv", "nothing.txt"):
        main(["file", path])
    paths = [(r.path.rsplit("/", 1)[-1], r.queued) for r in rows_of(site, file_reports)]
    assert paths == [("a.csv", 1), ("a.csv", 1), ("nothing.txt", 0)]


def _row(status: Status) -> NewExecution:
    now = datetime(2024, 1, 2, tzinfo=UTC)
    return NewExecution("", "w.toml", "t", now, Trigger.FILE, "", {}, now, status=status)


@pytest.mark.parametrize(
    ("path", "statuses", "task_time", "queued"),
    [
        ("/in/2024/01/02/13/a.csv", [Status.QUEUED], datetime(2024, 1, 2, 13, tzinfo=UTC), 1),
        ("/in/a.csv", [Status.QUEUED, Status.QUEUED], None, 2),
        # a phase that matched but could not fire (its error row) queued nothing
        ("/in/a.csv", [Status.QUEUED, Status.ERROR], None, 1),
        ("/in/a.csv", [], None, 0),
    ],
)
def test_report_of_a_file(
    path: str, statuses: list[Status], task_time: datetime | None, queued: int
) -> None:
    report = FileReport.of(path, Source.WATCH, [_row(s) for s in statuses])
    assert report == FileReport(path, Source.WATCH, task_time, queued)


def test_prune_deletes_old_reports(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["file", "nothing.txt"])
    capsys.readouterr()
    assert main(["prune", "--older-than", "0s", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file_reports"] == 1
    assert main(["prune", "--older-than", "0s"]) == 0
    assert "0 alerts, 1 file reports" in capsys.readouterr().out
    assert rows_of(site, file_reports) == []
