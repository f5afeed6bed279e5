"""Read-only access: a connection on which the database itself refuses every write.

Users' SQL (``tomlflow sql``) and Claude's SQL (``ask``, ``mcp``) run here, so safety never
depends on reading the statement. Every call gets a new connection (no pool: no session state
survives a call) and its own transaction, which is always rolled back.

SQLite: the file is opened with ``mode=ro``, ``PRAGMA query_only`` is set, ATTACH is limited to
zero databases, and an authorizer denies ATTACH, transaction control (COMMIT, ROLLBACK,
BEGIN, SAVEPOINT) and pragmas that set a value; the driver runs one statement per call; a
progress handler stops a query that runs past its time limit.

PostgreSQL: the transaction is ``READ ONLY`` with a ``SET LOCAL statement_timeout`` issued
before the statement. Someone's SQL runs as the query of a cursor, ``DECLARE … CURSOR FOR
<sql>``, sent with the extended query protocol: the server parses exactly one statement there,
and a cursor takes only a query (SELECT, VALUES, TABLE, WITH … SELECT without data-modifying
parts), so COMMIT, SET, COPY, DO, CALL, LOCK, PREPARE… are refused by the server's own parser.
Its rows come from one FETCH, whose statement timer is armed before the query runs, so a
``set_config('statement_timeout', …)`` inside the query cannot lift the limit on itself.
A superuser can still read server files (``pg_read_file``): see docs/SECURITY.md for the
read-only role to use instead. Other backends are refused.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.pool import NullPool

from scheduler.errors import StoreError
from scheduler.redact import redact

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0

# Pragmas that only read, even when given an argument (``PRAGMA table_info(executions)``).
_READING_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check", "collation_list",
    "function_list", "pragma_list", "database_list", "compile_options",
})
_PROGRESS_EVERY = 10_000  # SQLite virtual machine steps between deadline checks

_CURSOR = "tomlflow_query"
_DECLARE = f"DECLARE {_CURSOR} NO SCROLL CURSOR FOR "
_SYNTAX_ERROR = "42601"
NOT_A_QUERY = "only a query can run on the read-only connection (SELECT, VALUES, TABLE, WITH)"
ONE_STATEMENT = "only one statement at a time can run here"


class QueryError(StoreError):
    """A read-only query was refused or failed; ``reason`` is the database's own first line."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        refused = any(word in reason for word in ("readonly", "not authorized",
                                                  "read-only transaction"))
        hint = " (the connection is read-only)" if refused else ""
        self.args = (f"query failed: {reason}{hint}",)


@dataclass(frozen=True)
class QueryResult:
    """Rows of one query: at most the cap asked for; ``truncated`` says more were left."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class ReadOnlyDatabase:
    """Opens ``url`` read-only. ``query`` is the only thing it does."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.engine = _make_engine(url, timeout_s)
        self.dialect = self.engine.dialect.name

    def query(self, sql: str, params: Mapping[str, Any] | None = None,
              max_rows: int = 1000) -> QueryResult:
        """Run one statement with ``:name`` parameters; return up to ``max_rows`` rows.

        Raises QueryError with the database's message when it refuses the statement (a write,
        bad SQL, several statements, a timeout).
        """
        return self._fetch(lambda conn: conn.execute(text(sql), dict(params or {})), max_rows)

    def run_sql(self, sql: str, max_rows: int = 1000) -> QueryResult:
        """Run someone's SQL exactly as written (no parameters: ``'a:b'`` stays a string).

        One statement, and on PostgreSQL one query (see the module docstring); raises
        QueryError when the database refuses it.
        """
        if self.dialect == "postgresql":
            return self._fetch_declared(sql, max_rows)
        return self._fetch(lambda conn: conn.exec_driver_sql(sql), max_rows)

    def _fetch(self, execute: Callable[[Connection], CursorResult[Any]],
               max_rows: int) -> QueryResult:
        with self._connection() as conn:
            try:
                result = execute(conn)
                if not result.returns_rows:
                    return QueryResult([], [], False)
                columns = list(result.keys())
                rows = [tuple(r) for r in result.fetchmany(max_rows + 1)]
            except (DBAPIError, StatementError) as exc:
                raise QueryError(self.url, _reason(exc)) from None
        return QueryResult(columns, rows[:max_rows], len(rows) > max_rows)

    def _fetch_declared(self, sql: str, max_rows: int) -> QueryResult:
        """PostgreSQL: ``sql`` as a cursor's query, its rows from a single FETCH."""
        import psycopg  # only a PostgreSQL URL gets here, and it needs psycopg anyway

        with self._connection() as conn:
            raw = conn.connection.driver_connection
            try:
                with raw.cursor() as cursor:  # type: ignore[union-attr]
                    # binary=True makes psycopg send the statement with the extended query
                    # protocol, where the server accepts exactly one statement. A DECLARE
                    # returns no rows, so the result format does not matter.
                    cursor.execute((_DECLARE + sql).encode(), binary=True)
                    cursor.execute(f"FETCH FORWARD {max_rows + 1} FROM {_CURSOR}")
                    columns = [c.name for c in cursor.description or ()]
                    rows = [tuple(r) for r in cursor.fetchall()]
            except psycopg.Error as exc:
                raise QueryError(self.url, _postgresql_reason(exc, sql)) from None
        return QueryResult(columns, rows[:max_rows], len(rows) > max_rows)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A new connection in a new transaction, rolled back whatever happened in it."""
        try:
            with self.engine.connect() as conn:
                _arm_deadline(conn, self.timeout_s)
                transaction = conn.begin()
                try:
                    yield conn
                finally:
                    _allow_rollback(conn)
                    transaction.rollback()
        except DBAPIError as exc:
            raise QueryError(self.url, _reason(exc)) from None

    def close(self) -> None:
        self.engine.dispose()


def _make_engine(url: str, timeout_s: float) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # make_url raises several types for one cause: a bad URL
        raise StoreError(url, f"cannot use this URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed.database or "")
    if parsed.get_backend_name() == "postgresql":
        if parsed.get_driver_name() != "psycopg":  # _fetch_declared speaks psycopg 3
            raise StoreError(url, "read-only queries on PostgreSQL need the psycopg driver:"
                                  " use a postgresql+psycopg:// URL")
        return _postgresql_engine(url, timeout_s)
    raise StoreError(url, "read-only queries need SQLite or PostgreSQL")


def _sqlite_engine(path: str) -> Engine:
    if path in ("", ":memory:") or path.startswith("file:"):
        raise StoreError(f"sqlite:///{path}", "read-only queries need a database file")

    def connect() -> sqlite3.Connection:
        # The URI form is the one that lets SQLite itself refuse writes (mode=ro).
        uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
        raw = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        raw.execute("PRAGMA query_only = 1")
        raw.execute("PRAGMA busy_timeout = 5000")
        raw.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        return raw

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN DEFERRED")
        # From here on the statement may not end, or nest in, the transaction we opened.
        conn.connection.dbapi_connection.set_authorizer(_authorize)  # type: ignore[union-attr]

    return engine


_DENIED = frozenset({sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_TRANSACTION,
                     sqlite3.SQLITE_SAVEPOINT})


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None,
               _trigger: str | None) -> int:
    """SQLite authorizer: deny ATTACH/DETACH, transaction control (BEGIN, COMMIT, ROLLBACK,
    SAVEPOINT) and any pragma that is given a value to set."""
    if action in _DENIED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None:
        reads = (arg1 or "").lower() in _READING_PRAGMAS
        return sqlite3.SQLITE_OK if reads else sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _postgresql_engine(url: str, timeout_s: float) -> Engine:
    engine = create_engine(url, poolclass=NullPool)
    limit_ms = max(1, int(timeout_s * 1000))
    warned: list[bool] = []

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {limit_ms}")
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {limit_ms}")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cursor.close()
        if not warned and dbapi_conn.info.parameter_status("is_superuser") == "on":
            warned.append(True)
            log.warning("read-only queries log in as a superuser, who can read server files: "
                        "set [scheduler] readonly_database to a role that may only SELECT "
                        "(docs/SECURITY.md)")

    return engine


def _allow_rollback(conn: Connection) -> None:
    """On SQLite, lift the authorizer so that our own ROLLBACK may run."""
    raw = conn.connection.dbapi_connection
    if isinstance(raw, sqlite3.Connection):
        raw.set_authorizer(None)


def _arm_deadline(conn: Connection, timeout_s: float) -> None:
    """On SQLite, make a query that runs past ``timeout_s`` stop with 'interrupted'."""
    raw = conn.connection.dbapi_connection
    if not isinstance(raw, sqlite3.Connection):
        return
    deadline = time.monotonic() + timeout_s
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_EVERY)


def _reason(exc: DBAPIError | StatementError) -> str:
    source = exc.orig if exc.orig is not None else exc
    first = str(source).strip().splitlines()
    reason = first[0] if first else type(source).__name__
    if "interrupted" in reason or "statement timeout" in reason:
        return "query stopped: it ran longer than the time limit"
    return redact(reason)


def _postgresql_reason(exc: Any, sql: str) -> str:
    """The server's first line, said in the user's terms where ours would confuse: a syntax
    error at the statement's first word is most often a statement that is not a query (DELETE,
    SET, COPY…), so the message says what may run."""
    first = str(exc).strip().splitlines()
    reason = first[0] if first else type(exc).__name__
    if "multiple commands" in reason:
        return ONE_STATEMENT
    if "statement timeout" in reason:
        return "query stopped: it ran longer than the time limit"
    position = exc.diag.statement_position
    start = len(_DECLARE) + len(sql) - len(sql.lstrip()) + 1  # the server counts from 1
    if exc.sqlstate == _SYNTAX_ERROR and position is not None and int(position) == start:
        return f"{redact(reason)}: {NOT_A_QUERY}"
    return redact(reason)
