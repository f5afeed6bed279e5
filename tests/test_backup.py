"""``tomlflow backup PATH`` and the daemon's periodic ``[scheduler] backup``."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.config import load_config
from scheduler.errors import ConfigError, StoreError
from scheduler.store import backup, history
from scheduler.store.db import Database
from scheduler.store.history import LogRow, NewExecution, Status, Trigger
from scheduler.store.search import SearchQuery, search
from tests.conftest import make_site

T = datetime(2024, 1, 2, tzinfo=UTC)
WORKFLOW = '[[phase]]\ntask = "etl"\nrule = "cron=0 0 * * *"\ntemplate = "true"\n'


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"p.toml": WORKFLOW}, "", monkeypatch)


def add_run(db: Database, line: str = "hello") -> int:
    row = NewExecution("c", "p.toml", "etl", T, Trigger.CRON, "", {}, T, status=Status.COMPLETE)
    with db.write() as conn:
        history.insert_executions(conn, [row], T)
        (last,) = history.list_executions(conn, limit=1)
        history.insert_logs(conn, [LogRow(last.id, 1, T, "stdout", line)])
    return last.id


def rows_in(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM executions").fetchone()[0])
    finally:
        conn.close()


def test_backup_while_a_writer_keeps_writing_is_one_consistent_snapshot(
    site_db: Database, tmp_path: Path
) -> None:
    # given a writer committing a run and its log line per transaction, as a scheduler does
    add_run(site_db)
    stop, written = threading.Event(), [1]

    def writer() -> None:
        while not stop.is_set():
            add_run(site_db)
            written.append(1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # when a backup is taken meanwhile
        result = backup.backup(site_db, tmp_path / "copy.db")
    finally:
        stop.set()
        thread.join()
    # then the copy passes quick_check and holds whole commits: each run with its line
    copy = sqlite3.connect(result.path)
    try:
        assert copy.execute("PRAGMA quick_check").fetchone() == ("ok",)
        runs = copy.execute("SELECT count(*) FROM executions").fetchone()[0]
        lines = copy.execute("SELECT count(*) FROM execution_logs").fetchone()[0]
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        copy.close()
    assert 1 <= runs == lines <= len(written)
    assert not list(tmp_path.glob(".copy.db.tmp*"))


def test_the_copy_opens_with_a_config_pointing_at_it(
    site: Path, site_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    add_run(site_db, "searchable words")
    assert main(["refresh", "--config", "tomlflow.toml"]) == 0  # status shows stored phases
    capsys.readouterr()
    assert main(["backup", "backups/copy.db", "--config", "tomlflow.toml"]) == 2  # no folder
    (site / "backups").mkdir()
    assert main(["backup", "backups/copy.db", "--config", "tomlflow.toml", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quick_check"] == "ok"
    # a config naming the copy: status works, and so does the search index (same rowids)
    (site / "copy.toml").write_text(
        '[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///backups/copy.db"\n'
    )
    assert main(["status", "--config", "copy.toml", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["phases"]
    assert (shown["task"], shown["last_status"]) == ("etl", "complete")
    copy = Database(f"sqlite:///{site / 'backups' / 'copy.db'}")
    try:
        with copy.read() as conn:
            assert [h.line for h in search(conn, SearchQuery("searchable"))] == ["searchable words"]
    finally:
        copy.close()


def test_a_failed_check_leaves_the_old_copy(
    site_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "copy.db"
    dest.write_bytes(b"the old copy")

    def corrupt(url: str, path: Path) -> None:
        raise StoreError(url, "the copy failed quick_check: page 3 is never used")

    monkeypatch.setattr(backup, "_verify", corrupt)
    with pytest.raises(StoreError, match="quick_check"):
        backup.backup(site_db, dest)
    assert dest.read_bytes() == b"the old copy"
    assert [p.name for p in dest.parent.iterdir()] == ["copy.db"]


def test_postgresql_is_told_to_use_pg_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pg.toml"
    config.write_text('[scheduler]\ndatabase = "postgresql+psycopg://u:secret@127.0.0.1:1/x"\n')
    assert main(["backup", str(tmp_path / "x.db"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "pg_dump" in err and "secret" not in err


def test_backup_refuses_a_missing_database_and_creates_none(site: Path) -> None:
    assert main(["backup", "copy.db", "--config", "tomlflow.toml"]) == 2
    assert not (site / "tomlflow.db").exists()


# -- periodic -------------------------------------------------------------------------------------


def test_config_keys(site: Path) -> None:
    (site / "tomlflow.toml").write_text(
        '[scheduler]\nbackup = "keep/copy.db"\nbackup_every = "6h"\n'
    )
    config = load_config("tomlflow.toml")
    assert config.backup == site / "keep" / "copy.db"
    assert config.backup_every == timedelta(hours=6)
    (site / "tomlflow.toml").write_text('[scheduler]\nbackup_every = "often"\n')
    with pytest.raises(ConfigError, match="backup_every"):
        load_config("tomlflow.toml")


def test_periodic_backup_is_due_when_the_copy_is_missing_or_old(
    site_db: Database, tmp_path: Path
) -> None:
    dest = tmp_path / "copy.db"
    periodic = backup.PeriodicBackup(site_db, dest, timedelta(hours=24))
    now = datetime.now(UTC)
    # a missing copy is made at once, on its own thread
    assert periodic.poll(now)
    periodic.join()
    assert rows_in(dest) == 0
    # a fresh copy is not made again, even by a restarted scheduler
    add_run(site_db)
    assert not backup.PeriodicBackup(site_db, dest, timedelta(hours=24)).poll(now)
    # once it is older than the interval, it is
    later = now + timedelta(hours=24, seconds=5)
    restarted = backup.PeriodicBackup(site_db, dest, timedelta(hours=24))
    assert restarted.poll(later)
    restarted.join()
    assert rows_in(dest) == 1
