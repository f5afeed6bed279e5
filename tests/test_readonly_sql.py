"""Someone's SQL (``tomlflow sql``, the ``run_sql`` tool) on the read-only connection: every way
out of it we know of, tried on SQLite and on PostgreSQL (TEST_SERVER_DATABASE_URL)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from scheduler.cli import main
from scheduler.errors import StoreError
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import LogRow, NewExecution, Trigger
from scheduler.store.readonly import QueryError, ReadOnlyDatabase
from tests.conftest import SERVER_URL

T0 = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)
LIMIT_S = 0.5  # the time limit of the connections under test

# Each must be refused, on both databases, and leave the database as it was.
ATTEMPTS = [
    # Several statements: the driver takes exactly one.
    "COMMIT; BEGIN READ WRITE; DELETE FROM executions; COMMIT",
    "COMMIT; SET statement_timeout = 0",
    "SELECT 1; DELETE FROM executions",
    "SELECT 1 --\n; DELETE FROM executions",
    # Writes, plain and hidden in a query.
    "DELETE FROM executions",
    "  -- a comment first\n DELETE FROM executions",
    "/* x */ UPDATE executions SET status = 'complete'",
    "INSERT INTO schema_version (version, applied_at) VALUES (99, 'x')",
    "WITH gone AS (DELETE FROM executions RETURNING id) SELECT COUNT(*) FROM gone",
    "TRUNCATE executions",
    "MERGE INTO executions e USING executions s ON e.id = s.id WHEN MATCHED THEN DELETE",
    "DROP TABLE execution_logs",
    "CREATE TABLE evil (x INTEGER)",
    "CREATE TEMP TABLE evil (x INTEGER)",
    "CREATE TABLE evil AS SELECT 1 AS x",
    "SELECT 1 AS x INTO evil",
    "ALTER TABLE executions ADD COLUMN evil INTEGER",
    "CREATE VIEW evil AS SELECT 1 AS x",
    "CREATE FUNCTION evil() RETURNS int AS 'SELECT 1' LANGUAGE sql",
    "CREATE EXTENSION dblink",
    "SELECT dblink_exec('dbname=postgres', 'DELETE FROM executions')",
    "SELECT nextval('executions_id_seq')",
    "SELECT * FROM executions FOR UPDATE",
    "VACUUM",
    "REINDEX TABLE executions",
    "EXPLAIN ANALYZE DELETE FROM executions",
    # Leaving, or nesting in, the transaction.
    "COMMIT",
    "ROLLBACK",
    "BEGIN READ WRITE",
    "BEGIN",
    "END",
    "SAVEPOINT s",
    "RELEASE SAVEPOINT s",
    # Settings: the time limit, the read-only mode, who we are.
    "SET statement_timeout = 0",
    "SET LOCAL statement_timeout = 0",
    "RESET statement_timeout",
    "RESET ALL",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    "SET TRANSACTION READ WRITE",
    "SET transaction_read_only = off",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "DISCARD ALL",
    # Other statements that are not queries.
    "COPY executions TO '/tmp/tomlflow-readonly-copy-{token}'",
    "COPY executions TO PROGRAM 'touch /tmp/tomlflow-readonly-program-{token}'",
    "COPY executions FROM '/etc/hostname'",
    "DO $$BEGIN DELETE FROM executions; END$$",
    "CALL evil()",
    "LOCK TABLE executions IN ACCESS EXCLUSIVE MODE",
    "NOTIFY tomlflow, 'x'",
    "LISTEN tomlflow",
    "PREPARE evil AS DELETE FROM executions",
    "EXECUTE evil",
    "DEALLOCATE ALL",
    "CHECKPOINT",
    "LOAD 'plpgsql'",
    # SQLite's own ways out.
    "ATTACH DATABASE '/tmp/tomlflow-readonly-attach-{token}.db' AS other",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA query_only = 0",
    "PRAGMA user_version = 7",
    "REPLACE INTO schema_version VALUES (1, 'x')",
    "SELECT load_extension('/tmp/evil')",
]


@pytest.fixture
def seeded(db: Database) -> Database:
    """``db`` with one execution and two log lines."""
    row = NewExecution(task_id="c1", file_path="etl.toml", task="load", task_time=T0,
                       trigger=Trigger.CRON, info="load.sh", meta={}, not_before=T0)
    with db.write() as conn:
        history.insert_executions(conn, [row], T0)
        history.insert_logs(conn, [LogRow(1, n, T0, "stdout", f"line {n}") for n in range(2)])
    return db


@pytest.fixture
def reader(seeded: Database) -> Iterator[ReadOnlyDatabase]:
    ro = ReadOnlyDatabase(seeded.url, timeout_s=LIMIT_S)
    yield ro
    ro.close()


def state(db: Database) -> tuple[object, ...]:
    """What a write would change: row counts, the schema's objects, the sequence."""
    with db.read() as conn:
        counts = tuple(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar()
                       for t in ("executions", "execution_logs", "schema_version"))
        if db.is_sqlite:
            objects = conn.execute(text("SELECT type, name FROM sqlite_master ORDER BY 2")).all()
            return counts, tuple(objects)
        objects = conn.execute(text(
            "SELECT c.relname, c.relkind, (SELECT COUNT(*) FROM pg_attribute a"
            " WHERE a.attrelid = c.oid) FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1")).all()
        sequence = conn.execute(text("SELECT last_value FROM executions_id_seq")).scalar()
        return counts, tuple(objects), sequence


def assert_still_locked(reader: ReadOnlyDatabase) -> None:
    """A new call is read-only with the time limit, whatever the last call did."""
    if reader.dialect == "sqlite":
        assert reader.run_sql("PRAGMA query_only").rows == [(1,)]
        return
    [row] = reader.run_sql("SELECT current_setting('transaction_read_only'),"
                           " current_setting('statement_timeout')").rows
    assert row == ("on", f"{int(LIMIT_S * 1000)}ms")


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_every_way_out_is_refused_and_changes_nothing(
        seeded: Database, reader: ReadOnlyDatabase, tmp_path: Path, attempt: str) -> None:
    token = uuid.uuid4().hex[:8]
    statement = attempt.format(token=token)
    before = state(seeded)
    with pytest.raises(QueryError) as refused:
        reader.run_sql(statement)
    assert str(refused.value).startswith("query failed: ")
    assert "\n" not in str(refused.value)
    assert state(seeded) == before
    assert not list(Path("/tmp").glob(f"tomlflow-readonly-*-{token}*"))
    assert_still_locked(reader)


ON_POSTGRESQL = pytest.mark.skipif(not SERVER_URL, reason="PostgreSQL only: run with "
                                   "TEST_SERVER_DATABASE_URL (SQLite has no such thing)")


@ON_POSTGRESQL
@pytest.mark.parametrize(
    "statement",
    [
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT pg_advisory_lock(1)",
    ],
)
def test_session_settings_made_by_a_query_end_with_its_call(
        seeded: Database, reader: ReadOnlyDatabase, statement: str) -> None:
    reader.run_sql(statement)
    assert_still_locked(reader)
    # The advisory lock went with its session: another session can take it at once.
    assert reader.run_sql("SELECT pg_try_advisory_lock(1)").rows == [(True,)]


def test_a_query_cannot_lift_its_own_time_limit(reader: ReadOnlyDatabase) -> None:
    if reader.dialect == "sqlite":
        # A query that never ends on its own: only the progress handler stops it.
        endless = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n)"
                   " SELECT MAX(i) FROM n")
    else:
        endless = ("SELECT set_config('statement_timeout', '0', true),"
                   " set_config('statement_timeout', '0', false), pg_sleep(60)")
    with pytest.raises(QueryError, match="ran longer than the time limit"):
        reader.run_sql(endless)


def test_queries_still_work(reader: ReadOnlyDatabase) -> None:
    result = reader.run_sql("SELECT task, COUNT(*) AS n FROM executions"
                            " WHERE task LIKE 'lo%' AND info <> 'a:b' GROUP BY task")
    assert (result.columns, result.rows) == (["task", "n"], [("load", 1)])
    capped = reader.run_sql("SELECT line FROM execution_logs ORDER BY seq", max_rows=1)
    assert (capped.rows, capped.truncated) == ([("line 0",)], True)
    with_cte = reader.run_sql("WITH x AS (SELECT 2 AS v) SELECT v FROM x")
    assert with_cte.rows == [(2,)]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("DELETE FROM executions", "read"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELEC 1", "syntax error"),
    ],
)
def test_refusals_say_why(reader: ReadOnlyDatabase, statement: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        reader.run_sql(statement)


def site(tmp_path: Path, url: str, extra: str = "") -> Path:
    (tmp_path / "workflows").mkdir(exist_ok=True)
    config = tmp_path / "tomlflow.toml"
    config.write_text(f'[scheduler]\nworkflows = "workflows"\ndatabase = "{url}"\n{extra}')
    return config


def test_sql_command_cannot_delete_history(seeded: Database, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's own example, through the command line."""
    config = site(tmp_path, seeded.url)
    before = state(seeded)
    statement = "COMMIT; BEGIN READ WRITE; DELETE FROM executions; COMMIT"
    assert main(["sql", statement, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: query failed:") and err.count("\n") == 1
    assert state(seeded) == before


# -- [scheduler] readonly_database ---------------------------------------------------------------


@pytest.fixture
def readonly_url(seeded: Database) -> Iterator[str]:
    """A URL for the same data that can only SELECT: a role on PostgreSQL, a copy on SQLite
    (with one more execution, so a test sees which database answered)."""
    if seeded.is_sqlite:
        copy = Path(make_url(seeded.url).database or "").with_name("copy.db")
        source, target = sqlite3.connect(make_url(seeded.url).database or ""), sqlite3.connect(copy)
        source.backup(target)
        source.close()
        target.close()
        extra = Database(f"sqlite:///{copy}")
        with extra.write() as conn:
            history.insert_executions(conn, [NewExecution(
                task_id="c2", file_path="etl.toml", task="load", task_time=T0,
                trigger=Trigger.CRON, info="load.sh", meta={}, not_before=T0)], T0)
        extra.close()
        yield f"sqlite:///{copy}"
        return
    role = f"tomlflow_ro_{uuid.uuid4().hex[:8]}"
    admin = create_engine(seeded.url, isolation_level="AUTOCOMMIT")
    name = make_url(seeded.url).database
    with admin.connect() as conn:
        for sql in (SECURITY_DOC_ROLE.format(role=role, database=name)).split(";"):
            if sql.strip():
                conn.execute(text(sql))
    try:
        yield make_url(seeded.url).set(username=role, password=None).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
        admin.dispose()


# The statements docs/SECURITY.md gives (without a password: the test server trusts local users).
SECURITY_DOC_ROLE = """
CREATE ROLE {role} LOGIN;
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}
"""


def test_sql_uses_readonly_database_when_set(seeded: Database, readonly_url: str,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path, seeded.url, f'readonly_database = "{readonly_url}"\n')
    assert main(["sql", "SELECT COUNT(*) AS n FROM executions", "--json",
                 "--config", str(config)]) == 0
    expected = 2 if seeded.is_sqlite else 1
    assert json.loads(capsys.readouterr().out) == [{"n": expected}]
    if not seeded.is_sqlite:
        assert main(["sql", "SELECT current_user AS who", "--json", "--config",
                     str(config)]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["who"] == make_url(readonly_url).username


@ON_POSTGRESQL
@pytest.mark.parametrize(
    "statement",
    [
        "SELECT pg_read_file('/etc/hostname')",
        "SELECT lo_import('/etc/hostname')",
        "SELECT pg_ls_dir('.')",
        "SELECT set_config('role', 'postgres', true), pg_read_file('/etc/hostname')",
    ],
)
def test_a_select_only_role_cannot_reach_the_server(seeded: Database, readonly_url: str,
                                                     statement: str) -> None:
    reader = ReadOnlyDatabase(readonly_url, timeout_s=LIMIT_S)
    try:
        with pytest.raises(QueryError):
            reader.run_sql(statement)
        assert reader.run_sql("SELECT COUNT(*) FROM executions").rows == [(1,)]
    finally:
        reader.close()


@pytest.mark.parametrize("url", ["postgresql+psycopg2://u@h/x", "postgresql+pg8000://u@h/x",
                                 "mysql+pymysql://u@h/x"])
def test_drivers_that_cannot_keep_the_promise_are_refused(url: str) -> None:
    with pytest.raises(StoreError, match="read-only queries"):
        ReadOnlyDatabase(url)
