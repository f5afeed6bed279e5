"""What ``tomlflow doctor`` reads from the database: facts only, judged in ``doctor``.

Everything here reads; nothing creates a database or writes to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from scheduler.store import lease, search
from scheduler.store.history import Status
from scheduler.store.schema import executions, metadata, workflow_files, workflow_phases
from scheduler.tasktime import from_iso

# The public tables, in the order a reader expects them.
TABLES = (
    "workflow_files",
    "workflow_phases",
    "phase_state",
    "executions",
    "execution_logs",
    "alerts",
    "file_reports",
)


@dataclass(frozen=True)
class TableSize:
    name: str
    rows: int
    bytes: int | None  # None where the database cannot tell


@dataclass(frozen=True)
class Queued:
    """Executions whose time to start has come but which have not started."""

    count: int
    oldest: datetime | None


def safe_url(url: str) -> str:
    """The URL with any password masked, for printing."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # an unparsable URL: show nothing of it
        return "<unparsable database URL>"


def ping(conn: Connection) -> None:
    conn.execute(text("SELECT 1"))


def quick_check(conn: Connection) -> list[str]:
    """SQLite's ``PRAGMA quick_check`` lines (``["ok"]`` when healthy); [] elsewhere."""
    if conn.dialect.name != "sqlite":
        return []
    return [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check")]


def search_index_ok(conn: Connection) -> bool:
    return search.index_ok(conn)


def search_indexed(conn: Connection) -> bool:
    return search.has_index(conn)


def table_sizes(conn: Connection) -> list[TableSize]:
    """Rows and (where known) bytes of each public table, indexes included."""
    sizes = _sqlite_bytes(conn) if conn.dialect.name == "sqlite" else {}
    found = []
    for name in TABLES:
        table = metadata.tables[name]
        rows = int(conn.scalar(select(func.count()).select_from(table)) or 0)
        if conn.dialect.name == "postgresql":
            size = conn.scalar(
                text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": name}
            )
            found.append(TableSize(name, rows, int(size) if size is not None else None))
        else:
            found.append(TableSize(name, rows, sizes.get(name)))
    return found


def _sqlite_bytes(conn: Connection) -> dict[str, int]:
    """Bytes per table with its indexes, from the dbstat table (absent from some builds)."""
    try:
        rows = conn.exec_driver_sql(
            "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d "
            "LEFT JOIN sqlite_schema m ON m.name = d.name GROUP BY 1"
        ).all()
    except DBAPIError:
        return {}
    return {str(name): int(size) for name, size in rows}


def holder(conn: Connection) -> lease.Holder | None:
    return lease.current(conn)


def file_errors(conn: Connection) -> list[tuple[str, str]]:
    """(file, error) of each workflow file whose last read failed."""
    query = select(workflow_files.c.file_path, workflow_files.c.error).where(
        workflow_files.c.error != ""
    )
    return [
        (r.file_path, r.error) for r in conn.execute(query.order_by(workflow_files.c.file_path))
    ]


def phase_errors(conn: Connection) -> list[tuple[str, str, str]]:
    """(file, task, status) of each phase whose status stops it from running."""
    c = workflow_phases.c
    query = select(c.file_path, c.task, c.status).where(c.severity == "error")
    return [
        (r.file_path, r.task, r.status) for r in conn.execute(query.order_by(c.file_path, c.task))
    ]


def queued_ready(conn: Connection, now: str) -> Queued:
    """The queued executions due by ``now`` (ISO text): how many, and the oldest due time."""
    c = executions.c
    query = select(func.count(), func.min(c.not_before)).where(
        c.status == Status.QUEUED.value, c.not_before <= now
    )
    count, oldest = conn.execute(query).one()
    return Queued(int(count or 0), from_iso(oldest) if oldest else None)


def wal_bytes(database_file: Path) -> int:
    """Size of a SQLite database's write-ahead log (0 when there is none)."""
    wal = database_file.with_name(database_file.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0
