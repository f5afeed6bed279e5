"""The one doorway to the database: opening, migrating, and short transactions.

SQLite gets WAL, ``synchronous=NORMAL`` and a busy timeout, and every write transaction starts
with ``BEGIN IMMEDIATE``: a deferred transaction that later upgrades to a write fails with
"database is locked" whatever the timeout. Other backends use their own default transactions,
through the same code.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from scheduler.errors import StoreError
from scheduler.redact import redact
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


def _workflow_file_stat_v7(conn: Connection) -> None:
    """workflow_files remembers each file's size and modification time, so a refresh reads and
    hashes only the files whose stat changed."""
    add_missing_columns(conn, schema.workflow_files)


def add_missing_columns(conn: Connection, table: Table) -> None:
    """Add the columns ``table`` declares that the database's table lacks (nullable ones only:
    what a later version adds to a released table)."""
    present = {column["name"] for column in inspect(conn).get_columns(table.name)}
    for column in table.columns:
        if column.name not in present:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def _log_search_v8(conn: Connection) -> None:
    """The full-text index of execution_logs (store/search.py), filled from the stored lines."""
    from scheduler.store import search

    search.create_index(conn)


def _deadlines_v9(conn: Connection) -> None:
    """Deadlines (rule key sla): how far each phase was checked, and a unique key that keeps
    one missed-deadline alert per phase and task time (store/deadlines.py)."""
    from scheduler.store import deadlines

    deadlines.create(conn)


def _cancel_requests_v10(conn: Connection) -> None:
    """cancel_requests: a user's cancel of a running execution, until the scheduler acts."""
    schema.cancel_requests.create(conn, checkfirst=True)


def _tick_stats_v11(conn: Connection) -> None:
    """scheduler_lease.ticks: the holder's tick-duration histogram, for /metrics."""
    add_missing_columns(conn, schema.scheduler_lease)


def _workflow_files_changes_v12(conn: Connection) -> None:
    """workflow_files_changes: a number triggers change with every write to workflow_files,
    so a process may keep the table's stats between refreshes (catalog.py)."""
    from scheduler.store import workflows

    workflows.install_change_counter(conn)


# Version N is reached by running MIGRATIONS[N-1]. Append; never edit a released step.
MIGRATIONS: list[Migration] = [
    _create_v1,
    _create_views,
    _query_views_v3,
    _lease_and_alert_index_v4,
    _phase_stats_v5,
    _file_reports_v6,
    _workflow_file_stat_v7,
    _log_search_v8,
    _deadlines_v9,
    _cancel_requests_v10,
    _tick_stats_v11,
    _workflow_files_changes_v12,
]


class Database:
    """An open database: an engine plus the transaction doorway every write goes through."""

    def __init__(self, url: str, *, migrate: bool = True, readonly: bool = False) -> None:
        self.url = url
        self.engine = _readonly_engine(url) if readonly else _make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if migrate:
            self.migrate()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One short write transaction (``BEGIN IMMEDIATE`` on SQLite); commits on success."""
        with self._immediate() as conn, conn.begin():
            yield conn

    @contextmanager
    def trial(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite) that is always rolled back."""
        with self._immediate() as conn:
            transaction = conn.begin()
            try:
                yield conn
            finally:
                transaction.rollback()

    @contextmanager
    def _immediate(self) -> Iterator[Connection]:
        """A connection whose transactions begin IMMEDIATE; driver errors as StoreError."""
        try:
            with self.engine.connect() as conn:
                yield conn.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
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
            log.info("database %s migrated to schema version %d", redact(self.url), current + 1)

    def close(self) -> None:
        self.engine.dispose()

    def display_url(self) -> str:
        """The URL to show a person: SQLAlchemy's own rendering, with any password as ``***``."""
        return self.engine.url.render_as_string(hide_password=True)

    def file_identity(self) -> FileIdentity | None:
        """Which file this SQLite database is, as found now; None for a server or in-memory
        database, or when the file is not there."""
        name = self.engine.url.database if self.is_sqlite else None
        if not name or name == ":memory:" or "mode=memory" in name:
            return None
        if name.startswith("file:"):  # a URI filename (``?uri=true``): its path part
            name = unquote(name[len("file:") :].split("?", 1)[0])
        return FileIdentity.of(Path(name).absolute())


@dataclass(frozen=True)
class FileIdentity:
    """A SQLite database file: its path and the (device, inode) that path named when read.

    A daemon keeps the one it opened and compares: a file deleted or replaced under it (a
    restore, a cleanup script) would otherwise take every later write into an unlinked inode.
    """

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity | None:
        """The identity of ``path`` now; None when nothing is there."""
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(path, found.st_dev, found.st_ino)

    def still_there(self) -> bool:
        """Whether the path still names this very file (neither deleted nor replaced)."""
        return FileIdentity.of(self.path) == self


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` (a StoreError from ``write``/``read``) says the database or its disk is
    full: SQLite's SQLITE_FULL, PostgreSQL's disk_full (SQLSTATE 53100). Nothing was written."""
    orig = getattr(exc.__cause__, "orig", None)
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
    return getattr(orig, "sqlstate", None) == "53100"


class NoDatabase(StoreError):
    """A command that only reads found no database; it never creates one."""

    def __init__(self, url: str) -> None:
        super().__init__(url, "no database")
        self.args = (f"no database at {where(url)}: run tomlflow init or tomlflow run first",)


def open_existing(url: str) -> Database:
    """The database at ``url``, opened read-only for commands that only read: never created,
    never migrated. Raises NoDatabase when there is none (no SQLite file, or no tomlflow tables
    in it), StoreError when its schema is not this tomlflow's."""
    path = _sqlite_path(url)
    if path is not None and not (path and Path(path).is_file()):
        raise NoDatabase(url)
    db = Database(url, migrate=False, readonly=True)
    try:
        current = db.version()
    except BaseException:
        db.close()
        raise
    if current != len(MIGRATIONS):
        db.close()
        if current == 0:
            raise NoDatabase(url)
        raise StoreError(where(url), _schema_mismatch(current))
    return db


def _schema_mismatch(current: int) -> str:
    newest = len(MIGRATIONS)
    if current > newest:
        return f"schema version {current} is newer than this tomlflow's ({newest})"
    return (
        f"schema version {current} is older than this tomlflow's ({newest}): "
        "run tomlflow refresh to upgrade it"
    )


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL ("" for an in-memory one); None for other databases."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite":
        return None
    return "" if parsed.database in (None, ":memory:") else parsed.database


def where(url: str) -> str:
    """Where a database is, fit to print: a SQLite URL's file, else the URL with its password
    hidden."""
    path = _sqlite_path(url)
    if path:
        return path
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "the configured URL"


def _readonly_engine(url: str) -> Engine:
    """An engine on which the database itself refuses writes: SQLite opens the file with
    ``mode=ro``; PostgreSQL sessions default to read-only transactions."""
    path = _sqlite_path(url)
    if path is None:
        engine = _make_engine(url)

        @event.listens_for(engine, "connect")
        def _read_only_session(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cursor.close()

        return engine
    if not path:
        raise NoDatabase(url)
    engine = create_engine("sqlite://", creator=lambda: _connect_readonly(path))
    _prepare_sqlite(engine)
    return engine


def _connect_readonly(path: str) -> sqlite3.Connection:
    uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
    raw = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        raw.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        # A WAL database in a folder this user cannot write: SQLite cannot create the -shm
        # file a reader needs, so the file is read as it stands (no writer can be there
        # either without that folder).
        raw.close()
        raw = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
    raw.execute("PRAGMA query_only = 1")
    return raw


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
