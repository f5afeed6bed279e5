"""The catalog keeps ``workflow_files``' stats between refreshes, and trusts them only while the
change counter (moved by database triggers on every write to the table) stays where it was."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete

from scheduler.catalog import Catalog
from scheduler.store import db as db_module
from scheduler.store import workflows as workflows_module
from scheduler.store.db import MIGRATIONS, Database
from scheduler.store.schema import schema_version
from scheduler.store.workflows import change_counter, phase_rows
from tests.conftest import ManualClock, WriteWorkflow, make_site, site_cli

PHASE = '[[phase]]\ntask = "{task}"\nrule = "cron=0 0 * * *"\ntemplate = "true"\n'
HOUR_NS = 3600 * 10**9


def _age(path: Path, by_ns: int = HOUR_NS) -> None:
    """Put ``path``'s modification time ``by_ns`` back (out of refresh's racy window)."""
    mtime = time.time_ns() - by_ns
    os.utime(path, ns=(mtime, mtime))


@pytest.fixture
def files(write_workflow: WriteWorkflow) -> list[Path]:
    """Three workflow files, an hour old, so refresh trusts their stat."""
    paths = [write_workflow(f"f{n}.toml", PHASE.format(task=f"t{n}")) for n in range(3)]
    for path in paths:
        _age(path)
    return paths


class _Counting:
    """A stand-in for the statement that reads every ``workflow_files`` stat: counts its runs."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.runs = 0

    def rows(self, conn: Connection, params: Any = ()) -> list[Any]:
        self.runs += 1
        return list(self.real.rows(conn, params))


@pytest.fixture
def stat_reads(monkeypatch: pytest.MonkeyPatch) -> _Counting:
    """How often refresh reads ``workflow_files``' stats (a seam at the statement itself)."""
    counting = _Counting(workflows_module._FILE_STATS)
    monkeypatch.setattr(workflows_module, "_FILE_STATS", counting)
    return counting


@pytest.fixture
def other(db: Database) -> Iterator[Database]:
    """A second Database on the same database: its own engine and connections."""
    second = Database(db.url)
    yield second
    second.close()


def test_an_unchanged_refresh_does_not_read_workflow_files(
    catalog: Catalog, files: list[Path], stat_reads: _Counting
) -> None:
    # given files loaded, and one refresh since (the load's own writes moved the counter)
    assert len(catalog.refresh().keys) == 3
    assert catalog.refresh().keys == []
    stat_reads.runs = 0
    # when refreshed again with nothing changed
    assert catalog.refresh().keys == []
    assert catalog.refresh().keys == []
    # then the stats kept from before are used: not one read of the table
    assert stat_reads.runs == 0


def test_the_catalogs_own_write_makes_the_next_refresh_read_again(
    catalog: Catalog, files: list[Path], stat_reads: _Counting, reads: list[str]
) -> None:
    catalog.refresh()
    catalog.refresh()
    # when a file is edited, the refresh that reloads it writes workflow_files
    files[1].write_text(PHASE.format(task="edited"), encoding="utf-8")
    _age(files[1], by_ns=HOUR_NS // 2)
    assert catalog.refresh().keys == ["f1.toml"]
    stat_reads.runs = 0
    reads.clear()
    # then the next refresh reads the stats once, and no file
    assert catalog.refresh().keys == []
    assert (stat_reads.runs, reads) == (1, [])
    assert catalog.refresh().keys == []
    assert stat_reads.runs == 1


# Writes by someone who knows nothing of the counter (a user's SQL), one per trigger. (A file
# forgotten by hand loses its phases too: a phase row without its file row is another matter.)
FORGET_F1 = (
    "DELETE FROM workflow_files WHERE file_path = 'f1.toml'",
    "DELETE FROM workflow_phases WHERE file_path = 'f1.toml'",
)
BEHIND_THE_BACK = {
    "delete": FORGET_F1,
    "update": ("UPDATE workflow_files SET file_size = NULL WHERE file_path = 'f1.toml'",),
    "insert": (
        "INSERT INTO workflow_files (file_path, file_hash, error) VALUES ('gone.toml', '', '')",
    ),
}


@pytest.mark.parametrize("write", BEHIND_THE_BACK)
def test_a_write_by_another_connection_is_seen_by_the_next_refresh(
    catalog: Catalog,
    db: Database,
    other: Database,
    files: list[Path],
    reads: list[str],
    write: str,
) -> None:
    # given files loaded, and their stats kept by the catalog
    catalog.refresh()
    catalog.refresh()
    reads.clear()
    # when another connection changes workflow_files with plain SQL
    with other.write() as conn:
        for statement in BEHIND_THE_BACK[write]:
            conn.exec_driver_sql(statement)
    # then the next refresh works from the table as it is now
    result = catalog.refresh()
    if write == "delete":  # the row is gone: the file is loaded again
        assert (result.keys, reads) == (["f1.toml"], ["f1.toml"])
        with db.read() as conn:
            assert [row.task for row in phase_rows(conn, "f1.toml")] == ["t1"]
    elif write == "update":  # the stat is unknown: the file is read (same md5, no reload)
        assert (result.keys, reads) == ([], ["f1.toml"])
    else:  # a row of a file that is not there: removed
        assert (result.keys, reads) == (["-gone.toml"], [])


def test_another_catalogs_refresh_is_trusted_without_reading_the_file(
    catalog: Catalog,
    other: Database,
    workflow_dir: Path,
    clock: ManualClock,
    files: list[Path],
    reads: list[str],
) -> None:
    # given the stats kept by this catalog
    catalog.refresh()
    catalog.refresh()
    # when a file is edited and another catalog (a second process, say) refreshes first
    files[2].write_text(PHASE.format(task="edited"), encoding="utf-8")
    _age(files[2], by_ns=HOUR_NS // 2)
    assert Catalog(other, workflow_dir, clock).refresh().keys == ["f2.toml"]
    reads.clear()
    # then this catalog reads the stats that one stored: nothing is left to read or reload
    assert catalog.refresh().keys == []
    assert reads == []
    assert [spec.task for spec in catalog.phases()] == ["t0", "t1", "edited"]


def test_a_write_by_another_process_is_seen(tmp_path: Path, clock: ManualClock) -> None:
    # given a site whose files this process loaded and keeps the stats of
    site = make_site(tmp_path, {"a.toml": PHASE.format(task="a"), "b.toml": PHASE.format(task="b")})
    for path in (site / "workflows").iterdir():
        _age(path)
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        catalog = Catalog(db, site / "workflows", clock)
        catalog.refresh()
        catalog.refresh()
        # when another process drops a file's row from workflow_files
        script = (
            "import sqlite3; c = sqlite3.connect('tomlflow.db'); "
            "c.execute(\"DELETE FROM workflow_files WHERE file_path = 'b.toml'\"); "
            "c.execute(\"DELETE FROM workflow_phases WHERE file_path = 'b.toml'\"); c.commit()"
        )
        subprocess.run([sys.executable, "-c", script], cwd=site, check=True, timeout=60)
        # then this process's next refresh loads that file again
        assert catalog.refresh().keys == ["b.toml"]
        # and a `tomlflow refresh` finds nothing left to do
        assert site_cli(site, "refresh").returncode == 0
        assert catalog.refresh().keys == []
    finally:
        db.close()


def test_without_the_counters_row_every_refresh_reads_the_stats(
    catalog: Catalog, db: Database, files: list[Path], stat_reads: _Counting
) -> None:
    # given a database whose counter row someone deleted
    with db.write() as conn:
        conn.exec_driver_sql("DELETE FROM workflow_files_changes")
    catalog.refresh()
    stat_reads.runs = 0
    # then nothing is trusted: each refresh reads the table
    assert catalog.refresh().keys == []
    assert catalog.refresh().keys == []
    assert stat_reads.runs == 2


def _back_to_previous_step(db: Database) -> None:
    """Make ``db`` what the step before the change counter left: no table, no triggers."""
    step = MIGRATIONS.index(db_module._workflow_files_changes_v12) + 1
    with db.write() as conn:
        if db.is_sqlite:
            for event in ("insert", "update", "delete"):
                conn.exec_driver_sql(f"DROP TRIGGER trg_workflow_files_{event}")
        else:
            conn.exec_driver_sql("DROP TRIGGER trg_workflow_files_changes ON workflow_files")
            conn.exec_driver_sql("DROP FUNCTION workflow_files_changed()")
        conn.exec_driver_sql("DROP TABLE workflow_files_changes")
        conn.execute(delete(schema_version).where(schema_version.c.version >= step))


def test_a_database_of_the_previous_step_gets_the_counter_when_opened(
    db: Database,
    workflow_dir: Path,
    clock: ManualClock,
    files: list[Path],
    stat_reads: _Counting,
    reads: list[str],
) -> None:
    # given a database at the step before, with files loaded by then
    Catalog(db, workflow_dir, clock).refresh()
    _back_to_previous_step(db)
    assert db.version() == len(MIGRATIONS) - 1
    # when it is opened
    reopened = Database(db.url)
    try:
        # then it is at the newest step, with a counter that writes move
        assert reopened.version() == len(MIGRATIONS)
        with reopened.read() as conn:
            before = change_counter(conn)
        assert before is not None
        catalog = Catalog(reopened, workflow_dir, clock)
        reads.clear()
        assert catalog.refresh().keys == []  # what was loaded before stays loaded
        assert reads == []
        stat_reads.runs = 0
        assert catalog.refresh().keys == []
        assert stat_reads.runs == 0
        with reopened.write() as conn:
            for statement in FORGET_F1:
                conn.exec_driver_sql(statement)
        with reopened.read() as conn:
            assert change_counter(conn) != before
        assert catalog.refresh().keys == ["f1.toml"]
    finally:
        reopened.close()
