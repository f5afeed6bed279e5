"""Store: SQLite settings, BEGIN IMMEDIATE writes, schema versions and migration."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, insert, inspect, select, text

from scheduler.errors import StoreError
from scheduler.store import schema
from scheduler.store.db import BUSY_TIMEOUT_MS, MIGRATIONS, Database
from tests.conftest import SERVER_URL

sqlite_only = pytest.mark.skipif(
    bool(SERVER_URL), reason="SQLite behaviour; the db fixture is on a server database"
)


def pragma(db: Database, name: str) -> object:
    with db.read() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


@sqlite_only
@pytest.mark.parametrize(
    ("name", "expected"),
    [("journal_mode", "wal"), ("synchronous", 1), ("busy_timeout", BUSY_TIMEOUT_MS)],
)
def test_sqlite_pragmas(db: Database, name: str, expected: object) -> None:
    # given a file database, then every connection has WAL, synchronous=NORMAL and a busy timeout
    assert pragma(db, name) == expected
    assert BUSY_TIMEOUT_MS > 0


@sqlite_only
def test_writes_begin_immediate_and_reads_deferred(db: Database) -> None:
    # given every new connection traces the statements SQLite runs
    seen: list[str] = []
    db.engine.dispose()
    event.listen(db.engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(seen.append))
    # when one write and one read run, then the write began IMMEDIATE and the read DEFERRED
    with db.write() as conn:
        conn.execute(text("SELECT 1"))
    with db.read() as conn:
        conn.execute(text("SELECT 1"))
    begins = [statement for statement in seen if statement.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN DEFERRED"]


def test_a_second_writer_waits_instead_of_failing(tmp_path: Path) -> None:
    # given a raw connection holding the write lock for a moment
    path = tmp_path / "t.db"
    db = Database(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    release.start()
    # when our write starts, then it waits for the lock (busy timeout) and succeeds
    try:
        with db.write() as conn:
            conn.execute(insert(schema.workflow_files).values(file_path="a", file_hash="h"))
    finally:
        release.join()
        holder.close()
    with db.read() as conn:
        assert conn.scalar(select(schema.workflow_files.c.file_path)) == "a"
    db.close()


def test_write_lock_is_taken_at_begin(tmp_path: Path) -> None:
    # given our write transaction is open (even before it wrote anything)
    path = tmp_path / "t.db"
    db = Database(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        # then nobody else can start writing: BEGIN IMMEDIATE took the lock up front
        with db.write(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        db.close()


def test_failed_write_rolls_back(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute(insert(schema.workflow_files).values(file_path="a", file_hash="h"))
        raise RuntimeError("boom")
    with db.read() as conn:
        assert conn.scalar(select(schema.workflow_files.c.file_path)) is None


def test_schema_version_rows(db: Database) -> None:
    # a new database records one row per migration, numbered from 1
    with db.read() as conn:
        rows = conn.execute(select(schema.schema_version).order_by("version")).all()
    assert [row.version for row in rows] == list(range(1, len(MIGRATIONS) + 1))
    assert all(row.applied_at.endswith("Z") for row in rows)
    assert db.version() == len(MIGRATIONS)


def test_migrate_twice_changes_nothing(db: Database) -> None:
    assert db.migrate() == len(MIGRATIONS)
    with db.read() as conn:
        versions = conn.scalars(select(schema.schema_version.c.version)).all()
    assert sorted(versions) == list(range(1, len(MIGRATIONS) + 1))


def test_public_tables_exist(db: Database) -> None:
    with db.read() as conn:
        found = inspect(conn)
        names = set(found.get_table_names()) | set(found.get_view_names())
    assert {
        "workflow_files",
        "workflow_phases",
        "executions",
        "execution_logs",
        "alerts",
        "schema_version",
        "phase_status",
        "task_relationships",
        "execution_stats",
    } <= names


def test_older_database_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    # given a database at version 1 (only the first migration run) holding a workflow file row
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Database(url, migrate=False)
    with old.write() as conn:
        MIGRATIONS[0](conn)
        conn.execute(
            schema.schema_version.insert().values(
                version=1, applied_at="2024-01-01T00:00:00.000000Z"
            )
        )
        conn.execute(insert(schema.workflow_files).values(file_path="keep.toml", file_hash="h"))
    assert old.version() == 1
    old.close()
    # when opened normally, then it is at the newest version and the row is still there
    db = Database(url)
    try:
        assert db.version() == len(MIGRATIONS) > 1
        with db.read() as conn:
            assert conn.scalar(select(schema.workflow_files.c.file_path)) == "keep.toml"
            versions = conn.execute(select(schema.schema_version)).all()
            conn.execute(text("SELECT * FROM phase_status")).all()  # a later migration's view
        assert [row.version for row in versions] == list(range(1, len(MIGRATIONS) + 1))
        assert versions[0].applied_at == "2024-01-01T00:00:00.000000Z"
    finally:
        db.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    db = Database(url)
    with db.write() as conn:
        conn.execute(
            schema.schema_version.insert().values(
                version=len(MIGRATIONS) + 1, applied_at="2099-01-01T00:00:00.000000Z"
            )
        )
    db.close()
    with pytest.raises(StoreError, match="newer than this tomlflow"):
        Database(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("not a url", "cannot use this URL"),
        ("nosuchdialect://x/y", "cannot use this URL"),
        ("", "cannot use this URL"),
    ],
)
def test_bad_url_is_a_store_error(url: str, reason: str) -> None:
    with pytest.raises(StoreError) as caught:
        Database(url)
    assert caught.value.url == url
    assert reason in str(caught.value)
    assert str(caught.value).startswith(f"database {url}: ")


def test_unopenable_file_is_a_store_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    with pytest.raises(StoreError, match="unable to open database file"):
        Database(url)


def test_in_memory_database_works() -> None:
    db = Database("sqlite://")
    try:
        with db.write() as conn:
            conn.execute(
                insert(schema.workflow_files).values(
                    file_path="a", file_hash="h", loaded_at=datetime.now(UTC).isoformat()
                )
            )
        assert db.version() == len(MIGRATIONS)
    finally:
        db.close()


def test_version_5_database_gets_file_reports_and_the_watched_state(db: Database) -> None:
    # given a database as version 5 left it: no file_reports, no watched-folder tables
    with db.write() as conn:
        for table in (schema.file_reports, schema.watched_files, schema.watched_roots):
            table.drop(conn)
        conn.execute(schema.schema_version.delete().where(schema.schema_version.c.version > 5))
    assert db.version() == 5
    # when migrated, then it is at version 6 with the tables and their indexes
    assert db.migrate() == len(MIGRATIONS)
    with db.read() as conn:
        found = inspect(conn)
        assert {"file_reports", "watched_roots", "watched_files"} <= set(found.get_table_names())
        indexes = {ix["name"]: ix["column_names"] for ix in found.get_indexes("file_reports")}
        columns = [c["name"] for c in found.get_columns("file_reports")]
        keys = found.get_pk_constraint("watched_files")["constrained_columns"]
    assert indexes == {
        "ix_file_reports_path": ["path", "reported_at"],
        "ix_file_reports_reported_at": ["reported_at"],
    }
    assert columns == ["id", "path", "source", "reported_at", "task_time", "queued"]
    assert keys == ["root", "path"]
    # and the new tables take rows
    with db.write() as conn:
        conn.execute(
            insert(schema.file_reports).values(
                path="/in/a.csv", source="command", reported_at="2024-01-02T00:00:00.000000Z"
            )
        )
    with db.read() as conn:
        assert conn.scalar(select(schema.file_reports.c.queued)) == 0


def test_version_6_database_gets_the_cancel_requests_table(db: Database) -> None:
    with db.write() as conn:
        schema.cancel_requests.drop(conn)
        conn.execute(schema.schema_version.delete().where(schema.schema_version.c.version > 6))
    assert db.version() == 6

    assert db.migrate() == len(MIGRATIONS)

    with db.read() as conn:
        found = inspect(conn)
        assert "cancel_requests" in found.get_table_names()
        assert found.get_pk_constraint("cancel_requests")["constrained_columns"] == [
            "execution_id"
        ]
