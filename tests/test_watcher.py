"""The folder watcher with real files: a file is reported once it has stayed the same for a poll."""

from __future__ import annotations

import os
import time
from pathlib import Path

from scheduler.config import parse_config
from scheduler.watcher import Diff, Entry, FolderWatcher, WatchState


def write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_files_present_at_start_are_not_reported(tmp_path: Path) -> None:
    write(tmp_path / "old.csv")
    watcher = FolderWatcher(tmp_path)
    assert watcher.poll() == []
    assert watcher.poll() == []


def test_report_existing_reports_them_once_stable(tmp_path: Path) -> None:
    old = write(tmp_path / "old.csv")
    watcher = FolderWatcher(tmp_path, report_existing=True)
    assert watcher.poll() == []
    assert watcher.poll() == [old]
    assert watcher.poll() == []


def test_new_file_is_reported_after_one_stable_poll_and_only_once(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    # Given a file that appears between polls
    new = write(tmp_path / "sub" / "deep" / "a.csv")
    # When the next poll first sees it, it is not yet reported (it may still be written)
    assert watcher.poll() == []
    # Then the poll after, finding it unchanged, reports it; later polls don't again
    assert watcher.poll() == [new]
    assert watcher.poll() == []


def test_file_still_growing_waits_until_it_stops(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    growing = write(tmp_path / "big.csv", "1")
    assert watcher.poll() == []
    with growing.open("a") as handle:
        handle.write("2")
    assert watcher.poll() == []  # changed since the last poll: not settled
    assert watcher.poll() == [growing]


def test_changed_file_is_reported_again(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "one")
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    # Same size, new modification time: a rewrite
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert watcher.poll() == []
    assert watcher.poll() == [path]


def test_removed_then_recreated_file_is_new_again(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    path = write(tmp_path / "a.csv")
    watcher.poll()
    assert watcher.poll() == [path]
    path.unlink()
    assert watcher.poll() == []
    write(path)
    assert watcher.poll() == []
    assert watcher.poll() == [path]


def test_file_removed_before_settling_is_never_reported(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    path = write(tmp_path / "tmp.csv")
    assert watcher.poll() == []
    path.unlink()
    assert watcher.poll() == []
    assert watcher.poll() == []


def test_dot_files_and_dot_folders_are_ignored(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    write(tmp_path / ".a.csv.part")
    write(tmp_path / ".staging" / "b.csv")
    visible = write(tmp_path / "c.csv")
    watcher.poll()
    assert watcher.poll() == [visible]


def test_several_files_are_reported_sorted(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    paths = [write(tmp_path / name) for name in ("b.csv", "a/z.csv", "a.csv")]
    watcher.poll()
    assert watcher.poll() == sorted(paths, key=str)


def test_missing_root_reports_nothing_until_it_exists(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    watcher = FolderWatcher(root)
    assert watcher.poll() == []
    path = write(root / "a.csv")
    assert watcher.poll() == []
    assert watcher.poll() == [path]


def test_a_root_that_vanishes_and_comes_back_reports_only_what_is_new(tmp_path: Path) -> None:
    # Given a watcher that knows a.csv (a mounted folder, say)
    root = tmp_path / "inbox"
    old = write(root / "a.csv")
    watcher = FolderWatcher(root)
    watcher.poll()
    # When the folder can't be listed for a while, nothing counts as removed...
    root.rename(tmp_path / "away")
    assert watcher.poll() == [] and not watcher.check().diff
    # ...then it comes back with one new file: only that one is reported
    (tmp_path / "away").rename(root)
    new = write(root / "b.csv")
    assert watcher.poll() == []
    assert watcher.poll() == [new]
    assert old not in watcher.poll()


def test_a_few_thousand_files_scan_quickly(tmp_path: Path) -> None:
    for folder in range(20):
        (tmp_path / f"d{folder}").mkdir()
        for n in range(150):
            (tmp_path / f"d{folder}" / f"f{n}.csv").write_text("x")
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    extra = write(tmp_path / "d3" / "new.csv")
    watcher.poll()
    started = time.perf_counter()
    assert watcher.poll() == [extra]
    assert time.perf_counter() - started < 1.0  # about 10 ms here; a generous bound


def test_config_watch_is_a_path_relative_to_the_config_file(tmp_path: Path) -> None:
    config = parse_config({"scheduler": {"watch": "incoming"}}, tmp_path / "tomlflow.toml")
    assert config.watch == tmp_path / "incoming"
    assert parse_config({}, tmp_path / "tomlflow.toml").watch is None


# -- seeding and diffs: what a caller keeps to continue after a restart ---------------------------


def test_check_changes_nothing_until_advance(tmp_path: Path) -> None:
    watcher = FolderWatcher(tmp_path)
    watcher.poll()
    path = write(tmp_path / "a.csv")
    watcher.poll()
    # Given a file due to be reported, when the caller checks without advancing (its write failed)
    assert watcher.check().ready == [path]
    # Then the next check reports it again; once advanced, it is reported no more
    result = watcher.check()
    assert result.ready == [path]
    watcher.advance(result)
    assert watcher.check().ready == []


def test_diffs_say_what_each_poll_changed(tmp_path: Path) -> None:
    old = write(tmp_path / "old.csv", "12")
    watcher = FolderWatcher(tmp_path)
    # The first poll takes stock: every file, settled, and the mark that stock was taken
    first = watcher.check()
    watcher.advance(first)
    signature = (2, old.stat().st_mtime_ns)
    assert first.diff == Diff({str(old): Entry(signature, False)}, first=True)
    # A new file: settling; an unchanged one: nothing
    new = write(tmp_path / "new.csv", "123")
    seen = watcher.check()
    watcher.advance(seen)
    new_signature = (3, new.stat().st_mtime_ns)
    assert seen.diff == Diff({str(new): Entry(new_signature, True)})
    # It settles (reported), and the old one is removed
    old.unlink()
    settled = watcher.check()
    watcher.advance(settled)
    assert settled.ready == [new]
    assert settled.diff == Diff({str(new): Entry(new_signature, False)}, frozenset({str(old)}))
    # Nothing changes: an empty diff
    quiet = watcher.check()
    assert not quiet.diff
    assert quiet.state == settled.state == WatchState({str(new): new_signature})


def test_report_existing_first_poll_marks_stock_taken_with_files_settling(tmp_path: Path) -> None:
    old = write(tmp_path / "old.csv")
    result = FolderWatcher(tmp_path, report_existing=True).check()
    assert result.diff.first
    assert result.diff.changed == {str(old): Entry((1, old.stat().st_mtime_ns), True)}


def test_seeded_watcher_continues_where_the_state_stopped(tmp_path: Path) -> None:
    # Given the state a previous run kept: a reported file, one still settling, one since gone
    done = write(tmp_path / "done.csv")
    pending = write(tmp_path / "pending.csv")
    state = WatchState(
        {str(done): signature_of(done), str(pending): signature_of(pending), "/gone.csv": (1, 1)},
        frozenset({str(pending)}),
    )
    # And a file that arrived while nobody watched
    arrived = write(tmp_path / "arrived.csv")
    watcher = FolderWatcher(tmp_path, state=state)
    # When polled: the settling one is reported at once, the one that arrived once it settled
    first = watcher.check()
    assert first.ready == [pending]
    assert not first.diff.first
    assert first.diff.removed == {"/gone.csv"}
    watcher.advance(first)
    assert watcher.poll() == [arrived]
    assert watcher.poll() == []  # and the reported one is never reported again


def test_an_empty_seed_is_not_a_first_start(tmp_path: Path) -> None:
    # Given a kept state with no files (the folder was emptied), files already there are new
    path = write(tmp_path / "a.csv")
    watcher = FolderWatcher(tmp_path, state=WatchState({}))
    assert watcher.poll() == []
    assert watcher.poll() == [path]


def signature_of(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns)
