"""The one doorway to the database: opening, migrating, and short transactions.

SQLite gets WAL, ``synchronous=NORMAL`` and a busy timeout, and every write transaction starts
with ``BEGIN IMMEDIATE``: a deferred transaction that later upgrades to a write fails with
"database is locked" whatever the timeout. Other backends use their own default transactions,
through the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from scheduler.errors import StoreError
from scheduler.store import schema
from scheduler.tasktime import iso

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
_BEGIN_MODE = "tomlflow_begin"

Migration = Callable[[Connection], None]


def _create_v1(conn: Connection) -> None:
    schema.metadata.create_all(conn)


def _create_views(conn: Connection) -> None:
    from scheduler.store import views  # views are defined next to their SQL

    views.create_all(conn)


def _query_views_v3(conn: Connection) -> None:
    """Richer views (p95, last failure, paused, next fire) and the indexes they need at a
    million executions: each phase's newest row, and (SQLite) each phase's rows by duration."""
    from scheduler.store import views

    conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_executions_phase_id ON executions (file_path, task, id)"
        )
    )
    if conn.dialect.name == "sqlite":
        # PostgreSQL refuses this expression in an index (its timestamptz cast is not immutable).
        conn.execute(
            text(
                "CREATE INDEX IF NOT EXISTS ix_executions_phase_duration ON executions "
                f"(file_path, task, {views.duration_sql('sqlite')}, status)"
            )
        )
    views.create_all(conn)


def _lease_and_alert_index_v4(conn: Connection) -> None:
    """The scheduler lease table, and an index for the notifier's look-up of unsent alerts."""
    schema.scheduler_lease.create(conn, checkfirst=True)
    conn.execute(text("CREATE INDEX IF NOT EXISTS ix_alerts_notified_at ON alerts (notified_at)"))


def _phase_stats_v5(conn: Connection) -> None:
    """execution_stats in milliseconds at a million executions: a stored duration_seconds
    (backfilled), partial indexes of each phase's durations and failures replacing version 3's
    expression index, and the trigger-kept phase_stats summary (backfilled). The views'
    create_all brings all of that before it re-creates the views (store/phase_stats.py)."""
    from scheduler.store import views

    views.create_all(conn)


def _file_reports_v6(conn: Connection) -> None:
    """file_reports (one row per reported file) with its indexes, and the watched folder's
    state (watched_roots, watched_files) that lets a restart continue where it stopped."""
    for table in (schema.file_reports, schema.watched_roots, schema.watched_files):
        table.create(conn, checkfirst=True)


def _cancel_requests_v7(conn: Connection) -> None:
    """cancel_requests: a user's cancel of a running execution, until the scheduler acts."""
    schema.cancel_requests.create(conn, checkfirst=True)


# Version N is reached by running MIGRATIONS[N-1]. Append; never edit a released step.
MIGRATIONS: list[Migration] = [
    _create_v1,
    _create_views,
    _query_views_v3,
    _lease_and_alert_index_v4,
    _phase_stats_v5,
    _file_reports_v6,
    _cancel_requests_v7,
]


class Database:
    """An open database: an engine plus the transaction doorway every write goes through."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if migrate:
            self.migrate()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One short write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success."""
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise StoreError(self.url, _reason(exc)) from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for the queries inside it."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except DBAPIError as exc:
            raise StoreError(self.url, _reason(exc)) from exc

    def version(self) -> int:
        with self.read() as conn:
            return _version(conn)

    def migrate(self) -> int:
        """Bring the schema to the newest version, one step per transaction; return it.

        Each step re-reads the version inside its write transaction, so processes opening a new
        database at the same moment apply every step exactly once between them.
        """
        while True:
            with self.write() as conn:
                current = _version(conn)
                if current > len(MIGRATIONS):
                    raise StoreError(
                        self.url, f"schema version {current} is newer than this tomlflow"
                    )
                if current == len(MIGRATIONS):
                    return current
                MIGRATIONS[current](conn)
                conn.execute(
                    schema.schema_version.insert().values(
                        version=current + 1, applied_at=iso(datetime.now(UTC))
                    )
                )
            log.info("database %s migrated to schema version %d", self.url, current + 1)

    def close(self) -> None:
        self.engine.dispose()


def _version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, "schema_version"):
        return 0
    return int(conn.scalar(select(func.max(schema.schema_version.c.version))) or 0)


def _make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        # Every transaction here ends in an explicit commit or rollback, so the pool's own
        # rollback on check-in would only add a round trip to each one.
        engine = create_engine(parsed, pool_reset_on_return=None)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise StoreError(url, f"cannot use this URL: {exc}") from exc
    except ImportError as exc:
        raise StoreError(url, f"driver not installed: {exc.name}") from exc
    if engine.dialect.name == "sqlite":
        _prepare_sqlite(engine)
    return engine


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, instead of the driver's own guess.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
        # Straight to the driver: this runs once per transaction, on the engine's hot path.
        conn.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig).splitlines()[0] if exc.orig else str(exc).splitlines()[0]
