"""The watched folder's state, kept so that a restart continues where the last run stopped.

``watched_roots`` marks a root whose stock was taken (the very first start there);
``watched_files`` holds each file under it as of the last poll, with whether it is still
settling. The engine seeds its ``FolderWatcher`` with ``load`` and writes each poll's diff with
``save`` in the tick's transaction, next to the reports and executions of the files that poll
reported: a crash then loses no report and makes none twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, delete, insert, select

from scheduler.store.schema import watched_files, watched_roots
from scheduler.tasktime import iso
from scheduler.watcher import Diff, WatchState

_DELETE_FILE = delete(watched_files).where(
    and_(watched_files.c.root == bindparam("root_"), watched_files.c.path == bindparam("path_"))
)


def load(conn: Connection, root: str) -> WatchState | None:
    """The state kept for ``root``, or None when stock was never taken there."""
    if conn.scalar(select(watched_roots.c.since).where(watched_roots.c.root == root)) is None:
        return None
    c = watched_files.c
    rows = conn.execute(select(c.path, c.size, c.mtime_ns, c.settling).where(c.root == root))
    files: dict[str, tuple[int, int]] = {}
    settling: set[str] = set()
    for row in rows:
        files[row.path] = (int(row.size), int(row.mtime_ns))
        if row.settling:
            settling.add(row.path)
    return WatchState(files, frozenset(settling))


def save(conn: Connection, root: str, diff: Diff, now: datetime) -> None:
    """Apply one poll's ``diff`` to the state kept for ``root``; ``diff.first`` (stock taken)
    replaces whatever was kept and marks the root taken at ``now``. Call in a write
    transaction."""
    if diff.first:
        conn.execute(delete(watched_files).where(watched_files.c.root == root))
        conn.execute(delete(watched_roots).where(watched_roots.c.root == root))
        conn.execute(insert(watched_roots).values(root=root, since=iso(now)))
    else:
        # Delete, then insert what changed: the same statements whether a changed file was
        # kept before or not, on every backend.
        gone = [{"root_": root, "path_": path} for path in (*diff.removed, *diff.changed)]
        if gone:
            conn.execute(_DELETE_FILE, gone)
    if diff.changed:
        conn.execute(
            insert(watched_files),
            [
                {
                    "root": root,
                    "path": path,
                    "size": entry.signature[0],
                    "mtime_ns": entry.signature[1],
                    "settling": int(entry.settling),
                }
                for path, entry in diff.changed.items()
            ],
        )
