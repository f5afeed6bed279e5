"""Reading stored output: full-text search over every line, a tail, and the lines after a seq.

The search index is kept by the database itself, so every writer (the engine, a prune, a
hand-written ``DELETE``) keeps it right without knowing it exists:

- SQLite: ``execution_logs_fts``, an FTS5 table with external content (it stores only the
  index, the text stays in ``execution_logs``) that triggers on ``execution_logs`` keep in step.
  Its rowid is ``execution_logs``' rowid, which VACUUM may renumber (that table has no INTEGER
  PRIMARY KEY); after a VACUUM run ``rebuild_index`` (``tomlflow doctor`` checks the index).
- PostgreSQL: a GIN index on ``to_tsvector('simple', line)``; no extension is needed.

A SQLite built without FTS5 (rare: Python's own builds have it) gets no index; its searches
then read every line (``LIKE``-style, so parts of words match too), and ``doctor`` says so.

Both match whole words ('simple' tokenizing: no stemming, no stop words), every word of the
query in any order, case-insensitively.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import DBAPIError

from scheduler.store.schema import execution_logs, executions
from scheduler.tasktime import from_iso, iso

log = logging.getLogger(__name__)

FTS_TABLE = "execution_logs_fts"
PG_INDEX = "ix_execution_logs_line_fts"

_SQLITE_INDEX = [
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
    "line, content='execution_logs', content_rowid='rowid')",
    f"CREATE TRIGGER IF NOT EXISTS trg_{FTS_TABLE}_insert AFTER INSERT ON execution_logs BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, line) VALUES (new.rowid, new.line); END",
    f"CREATE TRIGGER IF NOT EXISTS trg_{FTS_TABLE}_delete AFTER DELETE ON execution_logs BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, line) VALUES ('delete', old.rowid, old.line); "
    "END",
    f"CREATE TRIGGER IF NOT EXISTS trg_{FTS_TABLE}_update AFTER UPDATE ON execution_logs BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, line) VALUES ('delete', old.rowid, old.line); "
    f"INSERT INTO {FTS_TABLE}(rowid, line) VALUES (new.rowid, new.line); END",
]
_PG_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON execution_logs "
    "USING GIN (to_tsvector('simple', line))"
)


def create_index(conn: Connection) -> None:
    """Create the search index and fill it from the lines already stored (a migration step)."""
    if conn.dialect.name == "sqlite":
        if not has_fts5(conn):
            log.warning("this SQLite has no FTS5: logs --search will read every line")
            return
        for statement in _SQLITE_INDEX:
            conn.exec_driver_sql(statement)
        rebuild_index(conn)
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(_PG_INDEX)


def has_fts5(conn: Connection) -> bool:
    """Whether this SQLite library was built with FTS5."""
    options = {str(row[0]) for row in conn.exec_driver_sql("PRAGMA compile_options")}
    return "ENABLE_FTS5" in options


def has_index(conn: Connection) -> bool:
    """Whether the SQLite search index exists (PostgreSQL's always does after migration)."""
    return conn.dialect.name != "sqlite" or conn.dialect.has_table(conn, FTS_TABLE)


def rebuild_index(conn: Connection) -> None:
    """Rebuild the SQLite index from ``execution_logs`` (PostgreSQL keeps its own)."""
    if conn.dialect.name == "sqlite" and has_index(conn):
        conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")


def index_ok(conn: Connection) -> bool:
    """Whether the SQLite index matches the stored lines (True elsewhere and without one)."""
    if conn.dialect.name != "sqlite" or not has_index(conn):
        return True
    try:
        conn.exec_driver_sql(
            f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)"
        )
    except DBAPIError as exc:  # SQLITE_CORRUPT_VTAB: "database disk image is malformed"
        if "malformed" in str(exc.orig):
            return False
        raise
    return True


@dataclass(frozen=True)
class Hit:
    """One stored line that matched, with the execution it belongs to."""

    execution_id: int
    task: str
    task_time: datetime | None
    ts: datetime
    stream: str
    line: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "task": self.task,
            "task_time": iso(self.task_time) if self.task_time else None,
            "ts": iso(self.ts),
            "stream": self.stream,
            "line": self.line,
        }


@dataclass(frozen=True)
class SearchQuery:
    """What to look for: every word of ``words``; optionally only ``task`` (a task or a topic)
    and lines written in ``[since, until)``; at most ``limit`` hits, newest first."""

    words: str
    task: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


def search(conn: Connection, query: SearchQuery) -> list[Hit]:
    """The lines matching ``query``, newest first (by when they were stored on SQLite, by
    execution id then seq on PostgreSQL). Raises ValueError when it has no word."""
    terms = query.words.split()
    if not terms:
        raise ValueError("give at least one word to search for")
    if conn.dialect.name != "sqlite":
        sql, params = _postgres_sql(terms)
    else:
        sql, params = (_sqlite_sql if has_index(conn) else _scan_sql)(terms)
    where, more = _filters(query)
    params.update(more, limit_=query.limit)
    rows = conn.execute(text(sql.format(where=where)), params)
    return [
        Hit(
            r.execution_id,
            r.task,
            from_iso(r.task_time) if r.task_time else None,
            from_iso(r.ts),
            r.stream,
            r.line,
        )
        for r in rows
    ]


_COLUMNS = "l.execution_id, e.task, e.task_time, l.ts, l.stream, l.line"


def _sqlite_sql(terms: list[str]) -> tuple[str, dict[str, Any]]:
    # Each word quoted: FTS5 query syntax (NEAR, *, -, :) in user text is then plain text.
    match = " ".join('"' + term.replace('"', '""') + '"' for term in terms)
    # rowid follows insertion, so the index's own rowid order is newest first, without a sort.
    sql = (
        f"SELECT {_COLUMNS} FROM {FTS_TABLE} f "
        "JOIN execution_logs l ON l.rowid = f.rowid "
        "JOIN executions e ON e.id = l.execution_id "
        f"WHERE {FTS_TABLE} MATCH :match_ {{where}} ORDER BY f.rowid DESC LIMIT :limit_"
    )
    return sql, {"match_": match}


def _scan_sql(terms: list[str]) -> tuple[str, dict[str, Any]]:
    """Without an index: every line holding each term (any case, ASCII), newest first."""
    holds = " AND ".join(f"instr(lower(l.line), lower(:t{i})) > 0" for i in range(len(terms)))
    sql = (
        f"SELECT {_COLUMNS} FROM execution_logs l JOIN executions e ON e.id = l.execution_id "
        f"WHERE {holds} {{where}} ORDER BY l.rowid DESC LIMIT :limit_"
    )
    return sql, {f"t{i}": term for i, term in enumerate(terms)}


def _postgres_sql(terms: list[str]) -> tuple[str, dict[str, Any]]:
    # The expression must be written exactly as indexed for the GIN index to be used. Ordering
    # by the primary key (newest execution first) lets the planner walk that index backwards
    # and stop at the limit when a word is common, instead of sorting every match.
    sql = (
        f"SELECT {_COLUMNS} FROM execution_logs l JOIN executions e ON e.id = l.execution_id "
        "WHERE to_tsvector('simple', l.line) @@ plainto_tsquery('simple', :match_) {where} "
        "ORDER BY l.execution_id DESC, l.seq DESC LIMIT :limit_"
    )
    return sql, {"match_": " ".join(terms)}


def _filters(query: SearchQuery) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if query.task:
        clauses.append("AND (e.task = :task_ OR e.topic = :task_)")
        params["task_"] = query.task
    if query.since:
        clauses.append("AND l.ts >= :since_")
        params["since_"] = iso(query.since)
    if query.until:
        clauses.append("AND l.ts < :until_")
        params["until_"] = iso(query.until)
    return " ".join(clauses), params


# -- following one execution -----------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    seq: int
    ts: datetime
    stream: str
    line: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": iso(self.ts), "stream": self.stream, "line": self.line}


def lines_after(
    conn: Connection, execution_id: int, seq: int, limit: int | None = 5000
) -> list[Line]:
    """Up to ``limit`` (None: all) lines of one execution with a seq above ``seq``, in order."""
    c = execution_logs.c
    query = (
        select(c.seq, c.ts, c.stream, c.line)
        .where(c.execution_id == execution_id, c.seq > seq)
        .order_by(c.seq)
        .limit(limit)
    )
    return [Line(r.seq, from_iso(r.ts), r.stream, r.line) for r in conn.execute(query)]


def last_lines(conn: Connection, execution_id: int, count: int) -> list[Line]:
    """The last ``count`` lines of one execution, in order."""
    c = execution_logs.c
    query = (
        select(c.seq, c.ts, c.stream, c.line)
        .where(c.execution_id == execution_id)
        .order_by(c.seq.desc())
        .limit(count)
    )
    rows = [Line(r.seq, from_iso(r.ts), r.stream, r.line) for r in conn.execute(query)]
    return rows[::-1]


def execution_status(conn: Connection, execution_id: int) -> str | None:
    """The status of one execution, or None when there is no such row."""
    return conn.scalar(select(executions.c.status).where(executions.c.id == execution_id))
