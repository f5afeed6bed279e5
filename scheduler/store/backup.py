"""A consistent copy of a SQLite database, taken while a scheduler keeps writing to it.

``backup`` copies with SQLite's online backup API in one step: it reads one snapshot (in WAL
mode a reader never blocks the scheduler's writes, nor they it), so the copy is the database
as of one commit. The copy goes to a temporary file beside the destination, is switched to a
plain rollback journal (one self-contained file), checked with ``PRAGMA quick_check``, synced,
and only then renamed over the destination: a reader of the destination sees the old copy or
the new one, never half of one. PostgreSQL has ``pg_dump`` for this.

``PeriodicBackup`` is the daemon's ``[scheduler] backup`` / ``backup_every``: due when the
destination is missing or older than the interval (so restarts do not postpone it), it copies
on a thread of its own so the scheduler's ticks go on meanwhile.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.errors import StoreError, TomlflowError
from scheduler.store.db import Database

log = logging.getLogger(__name__)
RETRY_AFTER = timedelta(hours=1)  # after a failed periodic backup


class NotSqlite(TomlflowError):
    """Only SQLite databases are copied here."""

    def __init__(self) -> None:
        super().__init__(
            "backup copies SQLite databases; for PostgreSQL use pg_dump "
            "(e.g. pg_dump -Fc -f tomlflow.dump DBNAME)"
        )


@dataclass(frozen=True)
class BackupResult:
    path: Path
    bytes: int
    seconds: float


def sqlite_file(db: Database) -> Path:
    """The file of a SQLite database; raises NotSqlite, or StoreError for an in-memory one."""
    if not db.is_sqlite:
        raise NotSqlite()
    name = db.engine.url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        raise StoreError(db.url, "an in-memory database has no file to copy")
    return Path(name)


def backup(db: Database, dest: Path) -> BackupResult:
    """Copy ``db`` to ``dest`` atomically, verified; returns the copy's size and duration.

    Raises NotSqlite, or StoreError when the copy fails or does not pass ``quick_check``
    (the destination is then left as it was).
    """
    sqlite_file(db)
    started = time.monotonic()
    dest = dest.absolute()
    temp = dest.with_name(f".{dest.name}.tmp")
    temp.unlink(missing_ok=True)
    try:
        _copy(db, temp)
        _verify(db.url, temp)
        _sync(temp)
        os.replace(temp, dest)
        _sync(dest.parent)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(db.url, f"backup to {dest} failed: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    return BackupResult(dest, dest.stat().st_size, time.monotonic() - started)


def _copy(db: Database, temp: Path) -> None:
    raw = db.engine.raw_connection()
    try:
        target = sqlite3.connect(temp)
        try:
            raw.driver_connection.backup(target)  # type: ignore[union-attr]
            target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            target.close()
    finally:
        raw.close()


def _verify(url: str, path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        result = [row[0] for row in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()
    if result != ["ok"]:
        raise StoreError(url, f"the copy failed quick_check: {'; '.join(result[:3])}")


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PeriodicBackup:
    """``poll(now)`` starts a backup on its own thread when one is due; never raises."""

    def __init__(self, db: Database, dest: Path | None, every: timedelta) -> None:
        self.db = db
        self.dest = dest if db.is_sqlite else None
        self.every = every
        self._next: datetime | None = None
        self._thread: threading.Thread | None = None
        if dest is not None and not db.is_sqlite:
            log.warning("[scheduler] backup is for SQLite; back PostgreSQL up with pg_dump")

    def poll(self, now: datetime) -> bool:
        """Start a backup if one is due at ``now``; returns whether it started one."""
        if self.dest is None or (self._next is not None and now < self._next):
            return False
        if self._thread is not None and self._thread.is_alive():
            return False
        self._next = self._due_after(now)
        if self._next > now:
            return False
        self._next = now + self.every
        self._thread = threading.Thread(target=self._run, name="tomlflow-backup", daemon=True)
        self._thread.start()
        return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _due_after(self, now: datetime) -> datetime:
        """When the destination's copy becomes older than the interval (now if none)."""
        assert self.dest is not None
        try:
            made = datetime.fromtimestamp(self.dest.stat().st_mtime, UTC)
        except OSError:
            return now
        return made + self.every

    def _run(self) -> None:
        assert self.dest is not None
        try:
            result = backup(self.db, self.dest)
        except TomlflowError as exc:
            log.error("periodic backup failed: %s", exc)
            self._next = datetime.now(UTC) + min(self.every, RETRY_AFTER)
            return
        log.info("backed up the database to %s (%d bytes)", result.path, result.bytes)
