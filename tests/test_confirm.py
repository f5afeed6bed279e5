"""backfill --execute and prune ask on a terminal above 1,000 rows, and show a progress bar."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.cli import confirm
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import NewExecution, Status, Trigger
from scheduler.store.schema import executions
from tests.conftest import make_site
from tests.conftest import run_main as cli

HOURLY = '[[phase]]\ntask = "h"\nrule = "cron=0 * * * *"\ntemplate = "true {yyyy}{mm}{dd}{hh}"\n'
# 2024-01-01T00 .. 2024-02-12T00 by hour: 1,009 runs; the first day alone: 25.
BIG = ["--from", "2024-01-01T00", "--to", "2024-02-12T00", "--by", "hour"]
SMALL = ["--from", "2024-01-01T00", "--to", "2024-01-02T00", "--by", "hour"]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"p.toml": HOURLY}, "", monkeypatch)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A person at a terminal who answers with the strings the test appends."""
    answers: list[str] = []
    monkeypatch.setattr(confirm, "is_terminal", lambda: True)
    monkeypatch.setattr("sys.stdin", _Answers(answers))
    yield answers


class _Answers(io.StringIO):
    def __init__(self, answers: list[str]) -> None:
        super().__init__()
        self.answers = answers

    def readline(self, _size: int | None = -1) -> str:
        if not self.answers:
            raise AssertionError("asked although no answer was expected")
        return self.answers.pop(0) + "\n"


def count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.scalar(select(func.count()).select_from(executions)) or 0)


def test_backfill_above_1000_rows_asks_and_a_no_queues_nothing(
    site_db: Database, terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    terminal.append("n")
    assert cli("backfill", "h", *BIG, "--execute") == 1
    assert "queue 1,009 runs of h. Continue?" in capsys.readouterr().err
    assert count(site_db) == 0


def test_backfill_confirmed_queues_with_a_progress_bar(
    site_db: Database, terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    terminal.append("y")
    assert cli("backfill", "h", *BIG, "--execute") == 0
    assert count(site_db) == 1009
    err = capsys.readouterr().err
    assert "queueing" in err and "1009/1009" in err


def test_backfill_asks_not_with_yes_nor_for_few_rows(
    site_db: Database, terminal: list[str]
) -> None:
    assert cli("backfill", "h", *BIG, "--execute", "--yes") == 0
    assert cli("backfill", "h", *SMALL, "--execute") == 0
    assert count(site_db) == 1009 + 25


def test_without_a_terminal_nothing_is_asked(
    site_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a TTY; a prompt would abort
    assert cli("backfill", "h", *BIG, "--execute") == 0
    assert count(site_db) == 1009


def old_rows(db: Database, n: int) -> None:
    then = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [
        NewExecution("c", "p.toml", "h", then, Trigger.CRON, "", {}, then, status=Status.COMPLETE)
    ] * n
    with db.write() as conn:
        history.insert_executions(conn, rows, then)


def test_prune_above_1000_rows_asks_on_a_terminal(
    site_db: Database, terminal: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # given 1,001 executions that ended long ago
    old_rows(site_db, 1001)
    # when prune is declined, nothing is deleted
    terminal.append("n")
    assert cli("prune", "--older-than", "1d") == 1
    assert "delete 1,001 rows" in capsys.readouterr().err
    assert count(site_db) == 1001
    # when it is confirmed, everything goes, with a progress bar
    terminal.append("y")
    assert cli("prune", "--older-than", "1d", "--batch", "500") == 0
    assert "deleting" in capsys.readouterr().err
    assert count(site_db) == 0


def test_prune_of_few_rows_or_with_yes_asks_nothing(site_db: Database, terminal: list[str]) -> None:
    old_rows(site_db, 1000)
    assert cli("prune", "--older-than", "1d") == 0
    old_rows(site_db, 1001)
    assert cli("prune", "--older-than", "1d", "--yes") == 0
    assert count(site_db) == 0
