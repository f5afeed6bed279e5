"""Reads and writes of ``workflow_files`` and ``workflow_phases``.

Every function takes an open connection; the caller owns the transaction, so that one file's
update (its row and all its phases) commits or rolls back as one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from scheduler.store.schema import phase_state, workflow_files, workflow_phases
from scheduler.tasktime import iso


@dataclass(frozen=True)
class PhaseRow:
    """A ``workflow_phases`` row as stored."""

    file_path: str
    task: str
    depends_on: str
    rule: str
    template: str
    retry: int
    status: str
    severity: str


@dataclass(frozen=True)
class FileRow:
    """A ``workflow_files`` row as stored."""

    file_path: str
    file_hash: str
    loaded_at: str | None
    last_modified: str | None
    error: str


def file_rows(conn: Connection) -> dict[str, FileRow]:
    rows = conn.execute(select(workflow_files).order_by(workflow_files.c.file_path))
    return {row.file_path: FileRow(**row._mapping) for row in rows}


def phase_rows(conn: Connection, file_path: str | None = None) -> list[PhaseRow]:
    query = select(workflow_phases).order_by(workflow_phases.c.file_path, workflow_phases.c.task)
    if file_path is not None:
        query = query.where(workflow_phases.c.file_path == file_path)
    return [PhaseRow(**row._mapping) for row in conn.execute(query)]


def replace_file(
    conn: Connection,
    file_path: str,
    file_hash: str,
    last_modified: datetime | None,
    phases: Iterable[PhaseRow],
    now: datetime,
    *,
    known: bool = True,
) -> None:
    """Store a file that loaded: its row, and exactly these phases in place of its old ones.

    ``known=False`` promises the store has no row for ``file_path`` yet (the caller read
    ``workflow_files``), so there is nothing to delete first: a cold load skips three
    statements per file.
    """
    rows = [vars(phase) for phase in phases]
    if known:
        conn.execute(delete(workflow_files).where(workflow_files.c.file_path == file_path))
        conn.execute(delete(workflow_phases).where(workflow_phases.c.file_path == file_path))
        # Forget scheduling state of phases the file no longer has; keep it for those it kept.
        kept = [row["task"] for row in rows]
        conn.execute(
            delete(phase_state).where(
                phase_state.c.file_path == file_path, phase_state.c.task.not_in(kept)
            )
        )
    _insert_file_row(conn, file_path, file_hash, last_modified, now)
    if rows:
        conn.execute(insert(workflow_phases), rows)


def mark_broken(
    conn: Connection,
    file_path: str,
    file_hash: str,
    last_modified: datetime | None,
    error: str,
) -> None:
    """Record that a file no longer loads; its last good phases and loaded_at stay as they were."""
    values = {
        "file_hash": file_hash,
        "last_modified": iso(last_modified) if last_modified else None,
        "error": error,
    }
    where = workflow_files.c.file_path == file_path
    if conn.execute(update(workflow_files).where(where).values(values)).rowcount == 0:
        conn.execute(insert(workflow_files).values(file_path=file_path, loaded_at=None, **values))


def remove_file(conn: Connection, file_path: str) -> None:
    """Delete a file's row, its phases and their scheduling state."""
    for table in (phase_state, workflow_phases, workflow_files):
        conn.execute(delete(table).where(table.c.file_path == file_path))


def _insert_file_row(
    conn: Connection,
    file_path: str,
    file_hash: str,
    last_modified: datetime | None,
    now: datetime,
) -> None:
    # After a delete (or for a new file) a plain insert: an upsert that reads the same everywhere.
    conn.execute(
        insert(workflow_files).values(
            file_path=file_path,
            file_hash=file_hash,
            loaded_at=iso(now),
            last_modified=iso(last_modified) if last_modified else None,
            error="",
        )
    )
