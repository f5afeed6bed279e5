"""Reported files: one ``file_reports`` row per file reported to the file triggers.

Written in the same transaction as the executions the file queued, by ``tomlflow file`` and by
the engine for the watched folder, so a report and what it fired commit (or vanish) together.
A file that matched no phase is recorded as well, with ``queued = 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, insert

from scheduler.store.history import NewExecution, Status
from scheduler.store.schema import file_reports
from scheduler.tasktime import iso, time_from_text


class Source(StrEnum):
    COMMAND = "command"  # tomlflow file PATH
    WATCH = "watch"  # the watched folder


@dataclass(frozen=True)
class FileReport:
    """A ``file_reports`` row to insert."""

    path: str
    source: Source
    task_time: datetime | None
    queued: int

    @classmethod
    def of(cls, path: str, source: Source, rows: Sequence[NewExecution]) -> FileReport:
        """The report of ``path``, given the rows it fired (``filetrigger.rows_for_file``):
        the task time named in the path (None when it names none), and how many of the rows
        are queued (a phase that could not fire has an error row instead; it is not counted)."""
        queued = sum(1 for row in rows if row.status is Status.QUEUED)
        return cls(path, source, time_from_text(path), queued)


def record(conn: Connection, reports: Sequence[FileReport], now: datetime) -> None:
    """Insert ``reports``, reported at ``now``. Call in the transaction inserting their rows."""
    if not reports:
        return
    stamp = iso(now)
    conn.execute(
        insert(file_reports),
        [
            {
                "path": report.path,
                "source": report.source.value,
                "reported_at": stamp,
                "task_time": iso(report.task_time) if report.task_time else None,
                "queued": report.queued,
            }
            for report in reports
        ],
    )
