"""`tomlflow history`: filters and export as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import NewExecution, Trigger
from tests.conftest import SITE_DATABASE, make_site

T0 = datetime(2024, 1, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = make_site(tmp_path, {}, monkeypatch=monkeypatch)
    db = Database(f"sqlite:///{root / SITE_DATABASE}")
    rows = [
        NewExecution(
            f"c{i}",
            "a.toml",
            "extract" if i % 2 else "load",
            T0,
            trigger,
            "echo",
            {},
            T0 + timedelta(hours=i),
        )
        for i, trigger in enumerate([Trigger.CRON, Trigger.MANUAL, Trigger.CRON, Trigger.BACKFILL])
    ]
    with db.write() as conn:
        for i, row in enumerate(rows):
            history.insert_executions(conn, [row], T0 + timedelta(hours=i))
    db.close()
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["history", *args]) == 0
    return capsys.readouterr().out


def test_csv_has_a_header_and_iso_timestamps(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = list(csv.DictReader(io.StringIO(run(capsys, "--format", "csv"))))
    assert [int(r["id"]) for r in rows] == [4, 3, 2, 1]
    assert rows[-1]["created_at"] == "2024-01-02T10:00:00.000000Z"
    assert rows[-1]["task_time"] == "2024-01-02T10:00:00.000000Z"


def test_filters(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def ids(*args: str) -> list[int]:
        return [r["id"] for r in json.loads(run(capsys, "--format", "json", *args))]

    assert ids("extract") == [4, 2]
    assert ids("--trigger", "cron") == [3, 1]
    assert ids("--since", "2024-01-02T12") == [4, 3]
    assert ids("--until", "2024-01-02T12") == [2, 1]
    assert ids("--status", "queued", "--limit", "1") == [4]
    assert json.loads(run(capsys, "--json", "load")) == json.loads(
        run(capsys, "--format", "json", "load")
    )


def test_table_and_bad_input(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "backfill" in run(capsys)
    assert main(["history", "--since", "someday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["history", "--format", "xml"]) == 2
