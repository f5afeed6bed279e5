"""The full-text index of stored output (store/search.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from scheduler import doctor
from scheduler.config import Config
from scheduler.store import db as db_module
from scheduler.store import history, retention
from scheduler.store import search as search_module
from scheduler.store.db import Database
from scheduler.store.history import Finish, LogRow, NewExecution, Status, Trigger
from scheduler.store.schema import schema_version
from scheduler.store.search import FTS_TABLE, PG_INDEX, SearchQuery, search

T = datetime(2024, 1, 2, tzinfo=UTC)


def execution(db: Database, task: str = "etl:load", at: datetime = T) -> int:
    row = NewExecution("c1", "p.toml", task, at, Trigger.CRON, "true", {}, at)
    with db.write() as conn:
        (claimed,) = history.insert_claimed(conn, [row], at)
    return claimed.id


def lines(db: Database, execution_id: int, *texts: str, at: datetime = T) -> None:
    rows = [
        LogRow(execution_id, i + 1, at + timedelta(seconds=i), "stdout", text)
        for i, text in enumerate(texts)
    ]
    with db.write() as conn:
        history.insert_logs(conn, rows)


def found(db: Database, words: str, **filters: object) -> list[str]:
    with db.read() as conn:
        return [hit.line for hit in search(conn, SearchQuery(words, **filters))]  # type: ignore[arg-type]


def test_every_word_must_match_in_any_order_case_insensitively(db: Database) -> None:
    eid = execution(db)
    lines(db, eid, "Loaded 10 rows into sales", "sales report sent", "rows skipped")
    assert found(db, "rows sales") == ["Loaded 10 rows into sales"]
    assert found(db, "SALES") == ["sales report sent", "Loaded 10 rows into sales"]
    assert found(db, "sale") == []  # whole words: no stemming


def test_query_syntax_in_user_text_is_plain_text(db: Database) -> None:
    # given lines with characters FTS5 and tsquery give meaning to
    eid = execution(db)
    lines(db, eid, 'error: "disk" NEAR full - retry*', "all fine")
    # then searching for them neither fails nor matches wrongly
    assert found(db, 'error: "disk" NEAR') == ['error: "disk" NEAR full - retry*']
    assert found(db, "retry* -") == ['error: "disk" NEAR full - retry*']
    assert found(db, "fine AND NOT") == []


def test_deleting_lines_removes_them_from_the_index(db: Database) -> None:
    # given an old finished execution's lines and a recent one's
    old, new = execution(db, at=T - timedelta(days=100)), execution(db)
    lines(db, old, "nightly export done", at=T - timedelta(days=100))
    lines(db, new, "nightly export done")
    with db.write() as conn:
        history.record_finishes(
            conn,
            [Finish(old, Status.COMPLETE, "", 0, T - timedelta(days=100), T - timedelta(days=100))],
        )
    # when prune deletes the old one
    retention.prune(db, T - timedelta(days=90))
    # then only the recent line is found
    with db.read() as conn:
        hits = search(conn, SearchQuery("export"))
    assert [hit.execution_id for hit in hits] == [new]


def test_task_and_time_filters(db: Database) -> None:
    a, b = execution(db, "etl:load"), execution(db, "report")
    lines(db, a, "step one", "step two")  # at T, T+1s
    lines(db, b, "step three")  # at T
    assert sorted(found(db, "step", task="etl")) == ["step one", "step two"]  # by topic
    assert found(db, "step", task="report") == ["step three"]
    assert found(db, "step", since=T + timedelta(seconds=1)) == ["step two"]
    assert sorted(found(db, "step", until=T + timedelta(seconds=1))) == ["step one", "step three"]
    assert len(found(db, "step", limit=2)) == 2


def test_migration_indexes_lines_stored_before_it(db: Database) -> None:
    # given a database as it was before the search step, holding output
    step = db_module.MIGRATIONS.index(db_module._log_search_v8) + 1
    with db.write() as conn:
        if db.is_sqlite:
            for suffix in ("insert", "delete", "update"):
                conn.exec_driver_sql(f"DROP TRIGGER trg_{FTS_TABLE}_{suffix}")
            conn.exec_driver_sql(f"DROP TABLE {FTS_TABLE}")
        else:
            conn.exec_driver_sql(f"DROP INDEX {PG_INDEX}")
        conn.execute(delete(schema_version).where(schema_version.c.version >= step))
    eid = execution(db)
    lines(db, eid, "written before the upgrade")
    # when it is migrated
    db.migrate()
    # then those lines are found, and new ones keep being indexed
    lines_after = [LogRow(eid, 9, T, "stdout", "written after the upgrade")]
    with db.write() as conn:
        history.insert_logs(conn, lines_after)
    assert sorted(found(db, "upgrade")) == [
        "written after the upgrade",
        "written before the upgrade",
    ]


def test_a_sqlite_without_fts5_still_migrates_and_searches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a SQLite library built without FTS5
    monkeypatch.setattr(search_module, "has_fts5", lambda _conn: False)
    db = Database(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        # then the database opens at the newest version, without an index
        assert db.version() == len(db_module.MIGRATIONS)
        with db.read() as conn:
            assert not search_module.has_index(conn)
            assert search_module.index_ok(conn)
        # and a search reads every line instead
        eid = execution(db)
        lines(db, eid, "Loaded 10 rows into sales", "sales report sent")
        assert found(db, "SALES rows") == ["Loaded 10 rows into sales"]
        assert found(db, "sales") == ["sales report sent", "Loaded 10 rows into sales"]
        # and the doctor says why searches are slow
        config = Config(workflows=tmp_path, database=db.url)
        report = doctor.examine(config, datetime.now(UTC))
        assert any(f.check == "search index" and "FTS5" in f.detail for f in report.findings)
    finally:
        db.close()
