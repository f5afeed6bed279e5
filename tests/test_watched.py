"""The watched folder across restarts: its state kept in the database (``store/watched.py``), and
engines that stop without a clean shutdown and are replaced by new ones on the same database.

Engines tick with a manual clock; the folder is real, the phase's command a real (trivial)
process. Time between polls is the clock's, never slept.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.config import Config
from scheduler.engine import WATCH_EVERY, Engine
from scheduler.errors import StoreError
from scheduler.executors import LocalExecutor
from scheduler.store import file_reports as reports_store
from scheduler.store import watched
from scheduler.store.db import Database
from scheduler.store.schema import executions, file_reports, watched_files, watched_roots
from scheduler.watcher import Diff, Entry, WatchState
from tests.conftest import ManualClock, WriteWorkflow

PY = sys.executable
STEP = WATCH_EVERY + timedelta(seconds=1)


# -- the kept state ---------------------------------------------------------------------------


def test_nothing_is_kept_for_a_root_never_watched(db: Database) -> None:
    with db.read() as conn:
        assert watched.load(conn, "/in") is None


def test_kept_state_follows_the_diffs(db: Database, clock: ManualClock) -> None:
    # Given stock taken of two files, then one settling, one rewritten, one removed
    with db.write() as conn:
        watched.save(
            conn,
            "/in",
            Diff({"/in/a": Entry((1, 10), False), "/in/b": Entry((2, 20), False)}, first=True),
            clock.now(),
        )
        other = Diff({"/other/x": Entry((5, 5), False)}, first=True)
        watched.save(conn, "/other", other, clock.now())
    with db.write() as conn:
        changed = {"/in/a": Entry((1, 11), True), "/in/c": Entry((3, 30), True)}
        watched.save(conn, "/in", Diff(changed, frozenset({"/in/b"})), clock.now())
    # Then loading gives exactly the state the watcher had, root by root
    with db.read() as conn:
        assert watched.load(conn, "/in") == WatchState(
            {"/in/a": (1, 11), "/in/c": (3, 30)}, frozenset({"/in/a", "/in/c"})
        )
        assert watched.load(conn, "/other") == WatchState({"/other/x": (5, 5)})


def test_an_emptied_root_keeps_its_mark(db: Database, clock: ManualClock) -> None:
    with db.write() as conn:
        watched.save(conn, "/in", Diff({"/in/a": Entry((1, 10), False)}, first=True), clock.now())
        watched.save(conn, "/in", Diff(removed=frozenset({"/in/a"})), clock.now())
    with db.read() as conn:
        assert watched.load(conn, "/in") == WatchState({})


def test_large_signatures_round_trip(db: Database, clock: ManualClock) -> None:
    # mtime_ns of today is about 1.7e18: more than a 32-bit column holds
    big = (5 * 2**40, 1_700_000_000_123_456_789)
    with db.write() as conn:
        watched.save(conn, "/in", Diff({"/in/a": Entry(big, True)}, first=True), clock.now())
    with db.read() as conn:
        assert watched.load(conn, "/in") == WatchState({"/in/a": big}, frozenset({"/in/a"}))


# -- engines on the same database -------------------------------------------------------------


@pytest.fixture
def incoming(tmp_path: Path, write_workflow: WriteWorkflow) -> Path:
    """A watched folder and a phase for its csv files."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    write_workflow(
        "files.toml",
        f"""
        [[phase]]
        task = "load"
        rule = "files={folder}/*.csv"
        template = "{PY} -c pass"
    """,
    )
    return folder


@pytest.fixture
def engines(db: Database, workflow_dir: Path, clock: ManualClock, incoming: Path):  # type: ignore[no-untyped-def]
    """Builds engines watching ``incoming``; each is dropped at the end without a shutdown,
    as a killed scheduler would be (only its executor is stopped, to end its processes)."""
    built: list[Engine] = []

    def build() -> Engine:
        config = Config(workflows=workflow_dir, database=db.url, max_workers=2, watch=incoming)
        engine = Engine(config, db, LocalExecutor(config.max_workers, clock.now), clock)
        built.append(engine)
        return engine

    yield build
    for engine in built:
        engine.executor.shutdown(0)


def polls(engine: Engine, clock: ManualClock, count: int = 1) -> None:
    for _ in range(count):
        clock.advance(STEP)
        engine.tick(clock.now())


def reported(db: Database) -> list[tuple[str, str, int]]:
    with db.read() as conn:
        rows = conn.execute(
            select(file_reports.c.path, file_reports.c.source, file_reports.c.queued).order_by(
                file_reports.c.id
            )
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def fired_for(db: Database) -> list[str]:
    """The file of each file-triggered execution, in order."""
    with db.read() as conn:
        query = select(executions.c.meta).where(executions.c.trigger == "file")
        rows = conn.execute(query.order_by(executions.c.id))
        return [json.loads(row.meta)["file"] for row in rows]


def write(path: Path, text: str = "a,b\n") -> Path:
    path.write_text(text)
    return path


def test_a_restarted_engine_reports_what_arrived_while_it_was_down(
    engines, clock: ManualClock, db: Database, incoming: Path
) -> None:
    # Given engine A took stock (old.csv was there), then reported a.csv
    old = write(incoming / "old.csv")
    a = engines()
    a.start()
    a.tick(clock.now())
    first = write(incoming / "a.csv")
    polls(a, clock, 2)
    assert reported(db) == [(str(first), "watch", 1)]
    # And saw c.csv appear, but was killed before it settled (no shutdown, the lease left held)
    pending = write(incoming / "c.csv")
    polls(a, clock)
    # When b.csv arrives while no scheduler runs, and engine B starts on the same database
    arrived = write(incoming / "b.csv")
    clock.advance(timedelta(minutes=5))
    b = engines()
    b.start()
    b.tick(clock.now())
    # Then B's first poll reports c.csv (unchanged since A saw it), the next one b.csv, once
    assert [r[0] for r in reported(db)] == [str(first), str(pending)]
    polls(b, clock, 3)
    assert reported(db) == [(str(p), "watch", 1) for p in (first, pending, arrived)]
    # And the files A had reported or found at its start are never reported again
    assert fired_for(db) == [str(first), str(pending), str(arrived)]
    assert str(old) not in fired_for(db)


def test_a_file_changed_while_down_is_reported_again(
    engines, clock: ManualClock, db: Database, incoming: Path
) -> None:
    a = engines()
    a.tick(clock.now())
    path = write(incoming / "a.csv", "one\n")
    polls(a, clock, 2)
    # When it is rewritten while down (same size, later modification time)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    b = engines()
    polls(b, clock, 3)
    assert fired_for(db) == [str(path), str(path)]


def test_an_emptied_folder_is_not_a_first_start(
    engines, clock: ManualClock, db: Database, incoming: Path
) -> None:
    # Given stock was taken of one file, which was then removed, and the engine stopped
    gone = write(incoming / "gone.csv")
    a = engines()
    a.tick(clock.now())
    gone.unlink()
    polls(a, clock)
    with db.read() as conn:
        assert conn.execute(select(watched_files)).all() == []
    # When a new file arrives and a new engine starts
    new = write(incoming / "new.csv")
    b = engines()
    polls(b, clock, 2)
    # Then it is reported: the folder was empty, not unknown
    assert reported(db) == [(str(new), "watch", 1)]


def test_the_first_start_ever_takes_stock_silently(
    engines, clock: ManualClock, db: Database, incoming: Path
) -> None:
    # Given files already in a folder never watched
    paths = [write(incoming / name) for name in ("a.csv", "b.csv")]
    # When engines watch it, one after the other
    a = engines()
    a.tick(clock.now())
    polls(a, clock, 3)
    b = engines()
    polls(b, clock, 3)
    # Then none is reported, and what was found is kept, settled
    assert reported(db) == []
    assert fired_for(db) == []
    with db.read() as conn:
        marks = conn.execute(select(watched_roots.c.root, watched_roots.c.since)).all()
        kept = conn.execute(select(watched_files.c.path, watched_files.c.settling)).all()
    assert [tuple(m) for m in marks] == [(str(incoming), "2024-01-02T12:00:00.000000Z")]
    assert sorted(tuple(k) for k in kept) == [(str(p), 0) for p in paths]


def test_a_file_matching_no_phase_is_reported_with_nothing_queued(
    engines, clock: ManualClock, db: Database, incoming: Path
) -> None:
    a = engines()
    a.tick(clock.now())
    other = write(incoming / "notes.txt")
    dated = write(incoming / "2024-03-04.csv")
    polls(a, clock, 2)
    assert reported(db) == [(str(dated), "watch", 1), (str(other), "watch", 0)]
    with db.read() as conn:
        times = conn.execute(select(file_reports.c.task_time).order_by(file_reports.c.id)).all()
    assert [t[0] for t in times] == ["2024-03-04T00:00:00.000000Z", None]


def test_a_failed_write_loses_no_report_and_makes_none_twice(
    engines, clock: ManualClock, db: Database, incoming: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file about to be reported, and a database write that fails at the report
    a = engines()
    a.tick(clock.now())
    path = write(incoming / "a.csv")
    polls(a, clock)

    def fail(*_args: object) -> None:
        raise StoreError(db.url, "disk I/O error")

    monkeypatch.setattr(reports_store, "record", fail)
    with pytest.raises(StoreError):
        polls(a, clock)
    # Then nothing of that tick was kept: no execution, the file still settling
    assert fired_for(db) == []
    with db.read() as conn:
        assert conn.execute(select(watched_files.c.settling)).scalars().all() == [1]
    # When the database works again, the next poll reports it, once
    monkeypatch.undo()
    polls(a, clock, 3)
    assert fired_for(db) == [str(path)]
    assert reported(db) == [(str(path), "watch", 1)]
