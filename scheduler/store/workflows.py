"""Reads and writes of ``workflow_files`` and ``workflow_phases``.

Every function takes an open connection; the caller owns the transaction, so that one file's
update (its row and all its phases) commits or rolls back as one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from scheduler.store.dbapi import Statement
from scheduler.store.schema import (
    phase_state,
    workflow_files,
    workflow_files_changes,
    workflow_phases,
)
from scheduler.tasktime import iso

# A workflow_phases row's values in column order, as validation.validate_rows gives them
# (a PhaseRow is one too): (file_path, task, depends_on, rule, template, retry, status, severity)
PhaseValues = tuple[str, str, str, str, str, int, str, str]


class PhaseRow(NamedTuple):
    """A ``workflow_phases`` row as stored, its fields in column order.

    A named tuple rather than a dataclass: a cold load builds one per phase and hands them
    to the driver as they are.
    """

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
    file_size: int | None = None
    file_mtime_ns: int | None = None


@dataclass(frozen=True, slots=True)
class FileStat:
    """What stat said of a file when it was read: ``mtime_ns`` None when too recent to trust."""

    size: int
    mtime_ns: int | None


_FILE_COLUMNS = [workflow_files.c[name] for name in FileRow.__dataclass_fields__]
_PHASE_COLUMNS = [workflow_phases.c[name] for name in PhaseRow._fields]


def file_rows(conn: Connection) -> dict[str, FileRow]:
    rows = conn.execute(select(*_FILE_COLUMNS).order_by(workflow_files.c.file_path)).all()
    return {row[0]: FileRow(*row) for row in rows}


# (file_path, file_size, file_mtime_ns) as the driver returns it
StatRow = tuple[str, int | None, int | None]


def file_stats(conn: Connection) -> dict[str, StatRow]:
    """Every ``workflow_files`` row's stat as last read, by key, in no particular order.

    What a refresh compares with the walk of the folder: with that walk, all an unchanged
    refresh does. So three columns, on the driver's own cursor, rows kept as it returns them
    (plain tuples; through SQLAlchemy's result the read took 11 ms for 10,000 files, not 6).
    """
    return {row[0]: row for row in _FILE_STATS.rows(conn)}


_FILE_STATS = Statement("SELECT file_path, file_size, file_mtime_ns FROM workflow_files")


class StatsCache:
    """``file_stats`` kept between reads while ``workflow_files`` is not written.

    Before trusting what it kept, each read asks the change counter, which triggers move on
    every write to the table by anyone (this process included); when it moved, the stats are
    read again. So a kept answer is always what a fresh read in the same transaction would
    give, and an unchanged refresh reads one number instead of every file's row.
    """

    def __init__(self) -> None:
        self._kept: tuple[int, dict[str, StatRow]] | None = None

    def read(self, conn: Connection) -> dict[str, StatRow]:
        """``file_stats(conn)``, from what was kept when the counter has not moved since.
        The dict returned is shared: read it, never change it."""
        counter = change_counter(conn)
        kept = self._kept
        if kept is not None and kept[0] == counter:
            return kept[1]
        stats = file_stats(conn)
        # one assignment: a thread refreshing alongside sees the old pair or the new, whole
        self._kept = None if counter is None else (counter, stats)
        return stats


def change_counter(conn: Connection) -> int | None:
    """The number ``workflow_files_changes`` holds: equal in two reads means no write to
    ``workflow_files`` committed between them (None: its one row is missing, so nothing can be
    told; a refresh then reads the stats every time).

    Read it BEFORE the stats it vouches for, in the same transaction: a write committing
    between the two reads then only makes the stats newer than the number, never older.
    """
    rows = _CHANGE_COUNTER.rows(conn)
    return int(rows[0][0]) if len(rows) == 1 else None


_CHANGE_COUNTER = Statement("SELECT counter FROM workflow_files_changes")


def install_change_counter(conn: Connection) -> None:
    """Create ``workflow_files_changes``, its one row and the triggers that bump it on every
    insert, update and delete of ``workflow_files``; idempotent.

    Triggers rather than a bump in this module's writers: a writer that knows nothing of the
    counter (a user's SQL, an older tomlflow, a future store function) still moves it.
    """
    workflow_files_changes.create(conn, checkfirst=True)
    count = select(func.count()).select_from(workflow_files_changes)
    if conn.execute(count).scalar_one() == 0:
        conn.execute(insert(workflow_files_changes).values(counter=0))
    if conn.dialect.name == "sqlite":
        for event in ("insert", "update", "delete"):  # SQLite has row triggers only
            name = f"trg_workflow_files_{event}"
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} AFTER {event.upper()} ON workflow_files BEGIN {_BUMP}; END"
            )
        return
    conn.exec_driver_sql(_PG_FUNCTION)
    conn.exec_driver_sql("DROP TRIGGER IF EXISTS trg_workflow_files_changes ON workflow_files")
    conn.exec_driver_sql(_PG_TRIGGER)


_BUMP = "UPDATE workflow_files_changes SET counter = counter + 1"
_PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION workflow_files_changed() RETURNS trigger LANGUAGE plpgsql "
    f"AS $body$ BEGIN {_BUMP}; RETURN NULL; END $body$"
)
# Once per statement, and BEFORE it, so the counter's row is locked before any row of
# workflow_files; and each writer here touches workflow_files before the phases of a file. So
# the counter is the first lock of every transaction that changes the catalog: two of them
# queue on it, and none holds a file's rows while waiting for it (a deadlock).
_PG_TRIGGER = (
    "CREATE TRIGGER trg_workflow_files_changes "
    "BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON workflow_files "
    "FOR EACH STATEMENT EXECUTE FUNCTION workflow_files_changed()"
)


class StoredStat(NamedTuple):
    """What a refresh needs of a stored file whose stat changed: whether its content did."""

    file_hash: str
    error: str
    size: int | None
    mtime_ns: int | None


def stored_stats(conn: Connection, keys: Sequence[str]) -> dict[str, StoredStat]:
    """The hash, error and stat of the stored files among ``keys``, by key."""
    columns = [workflow_files.c[name] for name in ("file_path", "file_hash", "error")]
    columns += [workflow_files.c.file_size, workflow_files.c.file_mtime_ns]
    found: dict[str, StoredStat] = {}
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        query = select(*columns).where(workflow_files.c.file_path.in_(chunk))
        found.update((row[0], StoredStat(*row[1:])) for row in conn.execute(query))
    return found


_KEYS_PER_QUERY = 500  # bound parameters per statement stay far below every driver's limit


def record_stats(conn: Connection, stats: dict[str, FileStat]) -> None:
    """Store the stat of files read again whose content had not changed (no reload)."""
    if not stats:
        return
    where = workflow_files.c.file_path == bindparam("key")
    statement = (
        update(workflow_files)
        .where(where)
        .values(file_size=bindparam("size"), file_mtime_ns=bindparam("mtime_ns"))
    )
    conn.execute(
        statement,
        [{"key": k, "size": s.size, "mtime_ns": s.mtime_ns} for k, s in stats.items()],
    )


def phase_rows(conn: Connection, file_path: str | None = None) -> list[PhaseRow]:
    query = select(*_PHASE_COLUMNS).order_by(workflow_phases.c.file_path, workflow_phases.c.task)
    if file_path is not None:
        query = query.where(workflow_phases.c.file_path == file_path)
    return [PhaseRow._make(row) for row in conn.execute(query)]


@dataclass(frozen=True)
class LoadedFile:
    """A file that loaded, ready to store in place of what the store had for it.

    ``known=False`` says the store had no row for ``file_path`` when the caller read
    ``workflow_files``: only a row stored since (by another process) is deleted first.
    """

    file_path: str
    file_hash: str
    last_modified: datetime | None
    phases: Sequence[PhaseValues]
    known: bool = True
    stat: FileStat | None = None


def replace_file(
    conn: Connection,
    file_path: str,
    file_hash: str,
    last_modified: datetime | None,
    phases: Iterable[PhaseValues],
    now: datetime,
    *,
    known: bool = True,
    stat: FileStat | None = None,
) -> None:
    """Store one file that loaded: its row, and exactly these phases in place of its old ones."""
    store_files(
        conn, [LoadedFile(file_path, file_hash, last_modified, tuple(phases), known, stat)], now
    )


def store_files(conn: Connection, files: Sequence[LoadedFile], now: datetime) -> None:
    """Store files that loaded, each with exactly its phases in place of its old ones.

    New files cost two statements in all (one insert of every file row, one of every phase),
    whatever their number: a cold load is mostly this.
    """
    # A file new when the caller read the stats may have been stored since by another process
    # refreshing at the same moment (the daemon and the command line): it is replaced too.
    unknown = [file.file_path for file in files if not file.known]
    stored_since = stored_stats(conn, unknown) if unknown else {}
    for file in files:
        if file.known or file.file_path in stored_since:
            _forget_file(conn, file.file_path, kept=[phase[1] for phase in file.phases])
    loaded_at = iso(now)
    conn.execute(
        _INSERT_FILE,
        [
            {
                "file_path": f.file_path,
                "file_hash": f.file_hash,
                "loaded_at": loaded_at,
                "last_modified": iso(f.last_modified) if f.last_modified else None,
                "error": "",
                **_stat_values(f.stat),
            }
            for f in files
        ],
    )
    # Straight to the driver: SQLAlchemy's per-row parameter building was most of the cost.
    _INSERT_PHASES.run_many(conn, [phase for file in files for phase in file.phases])


_INSERT_FILE = insert(workflow_files)
_INSERT_PHASES = Statement(
    f"INSERT INTO workflow_phases ({', '.join(PhaseRow._fields)}) "
    f"VALUES ({', '.join('?' * len(PhaseRow._fields))})"
)


def _forget_file(conn: Connection, file_path: str, kept: list[str]) -> None:
    """Delete a file's row and phases before they are stored anew; its phases' scheduling
    state stays for the tasks it kept."""
    conn.execute(delete(workflow_files).where(workflow_files.c.file_path == file_path))
    conn.execute(delete(workflow_phases).where(workflow_phases.c.file_path == file_path))
    conn.execute(
        delete(phase_state).where(
            phase_state.c.file_path == file_path, phase_state.c.task.not_in(kept)
        )
    )


def mark_broken(
    conn: Connection,
    file_path: str,
    file_hash: str,
    last_modified: datetime | None,
    error: str,
    stat: FileStat | None = None,
) -> None:
    """Record that a file no longer loads; its last good phases and loaded_at stay as they were."""
    values = {
        "file_hash": file_hash,
        "last_modified": iso(last_modified) if last_modified else None,
        "error": error,
        **_stat_values(stat),
    }
    where = workflow_files.c.file_path == file_path
    if conn.execute(update(workflow_files).where(where).values(values)).rowcount == 0:
        conn.execute(insert(workflow_files).values(file_path=file_path, loaded_at=None, **values))


def remove_file(conn: Connection, file_path: str) -> None:
    """Delete a file's row, its phases and their scheduling state (the row first: see
    _PG_TRIGGER)."""
    for table in (workflow_files, workflow_phases, phase_state):
        conn.execute(delete(table).where(table.c.file_path == file_path))


def _stat_values(stat: FileStat | None) -> dict[str, int | None]:
    if stat is None:
        return {"file_size": None, "file_mtime_ns": None}
    return {"file_size": stat.size, "file_mtime_ns": stat.mtime_ns}
