"""Catalog: refresh by md5 into the store, and flowlord's get/search/children lookups."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from scheduler import catalog as catalog_module
from scheduler.catalog import Catalog, depends_on_matches
from scheduler.errors import WorkflowError
from scheduler.store import workflows as workflows_module
from scheduler.store.db import Database
from scheduler.store.workflows import PhaseRow, file_rows, phase_rows, replace_file
from tests.conftest import ManualClock, WriteWorkflow

# flowlord's internal/test/workflow folder, in our own words.
F1 = """
[[Phase]]
task = "task1"
rule = "cron=0 * * * *&offset=-4h&job=t2&retry_delay=10ms"
retry = 3
template = "?date={yyyy}-{mm}-{dd}T{hh}"

[[Phase]]
task = "task2"
dependsOn = "task1"
template = "{meta:file}?time={yyyy}-{mm}-{dd}"

[[Phase]]
task = "task3"
DependsOn = "task2"
template = "{meta:file}"
"""
F2 = """
[[phase]]
task = "other"
rule = "cron=0 0 * * *"
"""
F3 = """
[[phase]]
task = "task1"
rule = "cron=0 0 * * *"
template = "?date={yyyy}-{mm}-{dd}"

[[phase]]
task = "task3"
rule = "files=./folder/*.txt"
template = "{meta:file}"
"""
JOBS = """
[[phase]]
task = "worker:parent_job"
rule = "cron=0 * * * *"

[[phase]]
task = "worker"
rule = "job=child1"
depends_on = "worker:parent_job"
template = "?date={yyyy}-{mm}-{dd}T{hh}"
"""
FLOWLORD_FOLDER = {"f1.toml": F1, "f2.toml": F2, "f3.toml": F3, "jobs.toml": JOBS}


def stored_files(db: Database) -> dict[str, str]:
    """file key → error, as stored."""
    with db.read() as conn:
        return {key: row.error for key, row in file_rows(conn).items()}


def stored_tasks(db: Database, file_path: str) -> list[str]:
    with db.read() as conn:
        return [row.task for row in phase_rows(conn, file_path)]


@pytest.fixture
def flowlord_folder(write_workflow: WriteWorkflow, workflow_dir: Path) -> Path:
    for name, text in FLOWLORD_FOLDER.items():
        write_workflow(name, text)
    return workflow_dir


def test_refresh_single_file(
    db: Database, flowlord_folder: Path, clock: ManualClock
) -> None:
    # given the path is one file, when refreshed, then that file alone is loaded, by base name
    catalog = Catalog(db, flowlord_folder / "f1.toml", clock)
    assert not catalog.is_dir()
    assert catalog.refresh().keys == ["f1.toml"]
    assert list(stored_files(db)) == ["f1.toml"]
    assert stored_tasks(db, "f1.toml") == ["task1:t2", "task2", "task3"]


def test_refresh_folder(catalog: Catalog, db: Database, flowlord_folder: Path) -> None:
    assert catalog.is_dir()
    assert catalog.refresh().keys == ["f1.toml", "f2.toml", "f3.toml", "jobs.toml"]
    assert len(stored_files(db)) == 4


def test_refresh_sub_folder(catalog: Catalog, db: Database, write_workflow: WriteWorkflow) -> None:
    write_workflow("f1.toml", F1)
    write_workflow("group/f3.toml", F3)
    assert catalog.refresh().keys == ["f1.toml", "group/f3.toml"]
    assert list(stored_files(db)) == ["f1.toml", "group/f3.toml"]


def test_refresh_missing_path_is_an_error(db: Database, tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(WorkflowError, match="no such file or folder"):
        Catalog(db, tmp_path / "nowhere", clock).refresh()


def test_refresh_file_removed(
    catalog: Catalog, db: Database, write_workflow: WriteWorkflow, workflow_dir: Path
) -> None:
    # given missing.toml, f1, f2, f3 loaded
    for name in ("f1.toml", "f2.toml", "f3.toml"):
        write_workflow(name, FLOWLORD_FOLDER[name])
    write_workflow("missing.toml", F2)
    catalog.refresh()
    # when missing.toml goes and jobs.toml arrives
    (workflow_dir / "missing.toml").unlink()
    write_workflow("jobs.toml", JOBS)
    result = catalog.refresh()
    # then jobs is added, missing reported as "-missing.toml", and its rows are gone
    assert result.keys == ["jobs.toml", "-missing.toml"]
    assert result.removed == ("missing.toml",)
    assert list(stored_files(db)) == ["f1.toml", "f2.toml", "f3.toml", "jobs.toml"]
    assert stored_tasks(db, "missing.toml") == []


def test_refresh_stale_hashes_reload(
    catalog: Catalog, db: Database, flowlord_folder: Path, clock: ManualClock
) -> None:
    # given f1 and f2 stored with checksums that do not match the files
    stale = PhaseRow("f1.toml", "old", "", "", "", 0, "", "ok")
    with db.write() as conn:
        replace_file(conn, "f1.toml", "0" * 32, None, [stale], clock.now())
        replace_file(conn, "f2.toml", "1" * 32, None, [], clock.now())
    # when refreshed, then both are reloaded (and the others added)
    assert catalog.refresh().keys == ["f1.toml", "f2.toml", "f3.toml", "jobs.toml"]
    assert len(stored_files(db)) == 4
    assert stored_tasks(db, "f1.toml") == ["task1:t2", "task2", "task3"]


def test_refresh_with_nothing_changed_returns_nothing(
    catalog: Catalog, flowlord_folder: Path
) -> None:
    catalog.refresh()
    result = catalog.refresh()
    assert result.keys == []
    assert (result.changed, result.removed, result.errors) == ((), (), ())


def test_changed_file_is_reloaded(
    catalog: Catalog, db: Database, flowlord_folder: Path, write_workflow: WriteWorkflow
) -> None:
    catalog.refresh()
    write_workflow("f2.toml", F2 + '\n[[phase]]\ntask = "more"\ndepends_on = "other"\n')
    assert catalog.refresh().keys == ["f2.toml"]
    assert stored_tasks(db, "f2.toml") == ["more", "other"]


def test_touched_but_identical_file_is_not_reloaded(
    catalog: Catalog, flowlord_folder: Path, write_workflow: WriteWorkflow
) -> None:
    # change detection is by content (md5), not modification time
    catalog.refresh()
    write_workflow("f2.toml", F2)
    assert catalog.refresh().keys == []


HOUR_NS = 3600 * 10**9


def _age(path: Path, by_ns: int = HOUR_NS) -> int:
    """Set ``path``'s modification time ``by_ns`` into the past (out of the racy window)."""
    mtime = time.time_ns() - by_ns
    os.utime(path, ns=(mtime, mtime))
    return mtime


def test_refresh_reads_only_files_whose_stat_changed(
    catalog: Catalog, flowlord_folder: Path, write_workflow: WriteWorkflow, reads: list[str]
) -> None:
    for path in flowlord_folder.glob("*.toml"):
        _age(path)
    catalog.refresh()
    assert sorted(reads) == ["f1.toml", "f2.toml", "f3.toml", "jobs.toml"]
    reads.clear()
    # nothing changed: stat alone decides, no file is opened
    assert catalog.refresh().keys == []
    assert reads == []
    # one file edited: only it is read
    _age(write_workflow("f2.toml", F2 + "\n# edited\n"), by_ns=HOUR_NS // 2)
    assert catalog.refresh().keys == ["f2.toml"]
    assert reads == ["f2.toml"]


def test_touched_identical_file_is_read_once_then_trusted_again(
    catalog: Catalog, flowlord_folder: Path, reads: list[str]
) -> None:
    for path in flowlord_folder.glob("*.toml"):
        _age(path)
    catalog.refresh()
    _age(flowlord_folder / "f2.toml", by_ns=HOUR_NS // 2)  # touched, same bytes
    reads.clear()
    assert catalog.refresh().keys == []
    assert reads == ["f2.toml"]  # read and hashed: same md5, so no reload, new stat kept
    reads.clear()
    assert catalog.refresh().keys == []
    assert reads == []


def test_a_change_that_keeps_size_and_mtime_is_seen_while_the_file_is_fresh(
    catalog: Catalog, db: Database, workflow_dir: Path, write_workflow: WriteWorkflow
) -> None:
    # given a file written just now (within the racy window of the refresh that reads it)
    path = write_workflow("w.toml", '[[phase]]\ntask = "aaaa"\nrule = "cron=0 0 * * *"\n')
    catalog.refresh()
    stat = os.stat(path)
    # when its content changes without changing its size, and its mtime is put back
    path.write_text('[[phase]]\ntask = "bbbb"\nrule = "cron=0 0 * * *"\n', encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    # then the next refresh still reads it: a fresh stat is never trusted
    assert catalog.refresh().keys == ["w.toml"]
    assert stored_tasks(db, "w.toml") == ["bbbb"]


def test_an_old_stat_is_stored_and_a_fresh_one_is_not(
    catalog: Catalog, db: Database, flowlord_folder: Path
) -> None:
    aged = _age(flowlord_folder / "f1.toml")
    catalog.refresh()
    with db.read() as conn:
        rows = file_rows(conn)
    assert (rows["f1.toml"].file_size, rows["f1.toml"].file_mtime_ns) == (
        (flowlord_folder / "f1.toml").stat().st_size,
        aged,
    )
    assert rows["f2.toml"].file_mtime_ns is None  # written by the fixture a moment ago


def test_broken_file_keeps_last_good_phases_and_records_error(
    catalog: Catalog, db: Database, flowlord_folder: Path, write_workflow: WriteWorkflow
) -> None:
    # given a loaded folder
    catalog.refresh()
    with db.read() as conn:
        loaded_at = file_rows(conn)["f2.toml"].loaded_at
    # when f2 becomes invalid TOML and f3 changes in the same refresh
    write_workflow("f2.toml", "[[phase]\ntask = ")
    write_workflow("f3.toml", F3 + '\n[[phase]]\ntask = "task4"\nrule = "cron=@daily"\n')
    result = catalog.refresh()
    # then f2 keeps its phases and carries the error; f3 still loads
    assert result.changed == ("f2.toml", "f3.toml")
    assert [key for key, _ in result.errors] == ["f2.toml"]
    assert stored_files(db)["f2.toml"].startswith("invalid TOML: ")
    assert stored_tasks(db, "f2.toml") == ["other"]
    assert stored_tasks(db, "f3.toml") == ["task1", "task3", "task4"]
    with db.read() as conn:
        assert file_rows(conn)["f2.toml"].loaded_at == loaded_at
    # and an unchanged broken file is not reported again
    assert catalog.refresh().keys == []


def test_error_clears_when_fixed(
    catalog: Catalog, db: Database, flowlord_folder: Path, write_workflow: WriteWorkflow
) -> None:
    catalog.refresh()
    write_workflow("f2.toml", "\xff not toml")
    catalog.refresh()
    assert stored_files(db)["f2.toml"] != ""
    write_workflow("f2.toml", F2.replace('"other"', '"renamed"'))
    assert catalog.refresh().keys == ["f2.toml"]
    assert stored_files(db)["f2.toml"] == ""
    assert stored_tasks(db, "f2.toml") == ["renamed"]


def test_new_broken_file_is_stored_with_its_error_and_no_phases(
    catalog: Catalog, db: Database, write_workflow: WriteWorkflow
) -> None:
    write_workflow("good.toml", F2)
    write_workflow("bad.toml", "phase = 1")
    result = catalog.refresh()
    assert result.keys == ["bad.toml", "good.toml"]
    assert stored_files(db) == {"bad.toml": "'phase' must be an array of tables", "good.toml": ""}
    assert stored_tasks(db, "bad.toml") == []
    assert stored_tasks(db, "good.toml") == ["other"]


def test_unreadable_file_is_an_error_not_a_crash(
    catalog: Catalog, db: Database, write_workflow: WriteWorkflow, workflow_dir: Path
) -> None:
    # given a workflow that cannot be read (a dangling link) beside a good one
    write_workflow("good.toml", F2)
    (workflow_dir / "link.toml").symlink_to(workflow_dir / "gone.toml")
    # when refreshed, then the good file loads and the other carries the error
    result = catalog.refresh()
    assert result.keys == ["good.toml", "link.toml"]
    assert stored_files(db)["link.toml"].startswith("cannot read: ")
    assert stored_files(db)["good.toml"] == ""
    # and while it stays unreadable, nothing changed
    assert catalog.refresh().keys == []


def test_validation_status_is_stored(
    catalog: Catalog, db: Database, write_workflow: WriteWorkflow
) -> None:
    write_workflow("v.toml", '[[phase]]\ntask = "a"\nrule = "cron=abcdefg"\n')
    catalog.refresh()
    (spec,) = catalog.phases()
    assert spec.status.startswith("invalid cron: abcdefg ")
    assert not spec.runnable


# --- lookups -------------------------------------------------------------------------------

WORKFLOW = """
[[phase]]
task = "task1"
rule = "cron=0 * * * *"
[[phase]]
task = "dup"
rule = "cron=0 * * * *"
[[phase]]
task = "task2"
depends_on = "task1"
[[phase]]
task = "task3"
depends_on = "task2"
[[phase]]
task = "task4"
depends_on = "task2"
[[phase]]
task = "task5"
depends_on = "task1:j4"
[[phase]]
task = "task1:j4"
rule = "cron=0 * * * *"
"""
W2JOB = """
[[phase]]
task = "dup"
rule = "cron=0 * * * *"
[[phase]]
task = "t2"
rule = "cron=0 * * * *&job=j1"
[[phase]]
task = "t2"
rule = "cron=0 * * * *&job=j2"
[[phase]]
task = "t2:j3"
rule = "cron=0 * * * *"
"""


@pytest.fixture
def lookups(catalog: Catalog, write_workflow: WriteWorkflow) -> Catalog:
    write_workflow("workflow.toml", WORKFLOW)
    write_workflow("w2job.toml", W2JOB)
    catalog.refresh()
    return catalog


@pytest.mark.parametrize(
    ("task", "found"),
    [
        ("task1", ("workflow.toml", "task1", "cron=0 * * * *")),  # no workflow meta needed
        ("task2", ("workflow.toml", "task2", "")),
        ("missing", None),
        ("", None),
        ("t2:j2", ("w2job.toml", "t2:j2", "cron=0 * * * *&job=j2")),
        ("t2:j1", ("w2job.toml", "t2:j1", "cron=0 * * * *&job=j1")),
        ("t2:invalid", None),
        ("t2:j3", ("w2job.toml", "t2:j3", "cron=0 * * * *")),
        ("t2", None),  # exact: a task with no job does not match t2:j1
        ("dup", ("w2job.toml", "dup", "cron=0 * * * *")),  # the first by file key
    ],
)
def test_get(lookups: Catalog, task: str, found: tuple[str, str, str] | None) -> None:
    spec = lookups.get(task)
    assert (None if spec is None else (spec.file_path, spec.task, spec.rule_text)) == found


def test_get_within_one_file(lookups: Catalog) -> None:
    spec = lookups.get("dup", "workflow.toml")
    assert spec is not None and spec.file_path == "workflow.toml"
    assert lookups.get("task1", "w2job.toml") is None


def test_get_returns_the_stored_status(lookups: Catalog, write_workflow: WriteWorkflow) -> None:
    write_workflow("workflow.toml", WORKFLOW + '[[phase]]\ntask = "lost"\ndepends_on = "x"\n')
    lookups.refresh()
    spec = lookups.get("lost")
    assert spec is not None and spec.status == "parent task not found: x"


@pytest.mark.parametrize(
    ("topic", "job", "found"),
    [
        ("t2", "j2", ("w2job.toml", "t2:j2")),
        ("t2", "j1", ("w2job.toml", "t2:j1")),
        ("t2", "j3", ("w2job.toml", "t2:j3")),
        ("t2", "invalid", None),
        ("t2", "", ("w2job.toml", "t2:j1")),  # no job: the first phase of the topic
        ("task2", "", ("workflow.toml", "task2")),
        ("task1", "j4", ("workflow.toml", "task1:j4")),
        ("missing", "", None),
        ("dup", "", ("w2job.toml", "dup")),
    ],
)
def test_search(
    lookups: Catalog, topic: str, job: str, found: tuple[str, str] | None
) -> None:
    spec = lookups.search(topic, job)
    assert (None if spec is None else (spec.file_path, spec.task)) == found


@pytest.mark.parametrize(
    ("file_path", "task", "children"),
    [
        ("workflow.toml", "task1", ["task2"]),  # task5 needs job j4
        ("workflow.toml", "task1:j4", ["task2", "task5"]),
        ("workflow.toml", "task2", ["task3", "task4"]),
        ("workflow.toml", "task3", []),
        ("workflow.toml", "task4", []),
        ("w2job.toml", "task1", []),  # children are in the parent's own file
        ("nope.toml", "task1", []),
        ("workflow.toml", "", []),
    ],
)
def test_children(lookups: Catalog, file_path: str, task: str, children: list[str]) -> None:
    assert [spec.task for spec in lookups.children(file_path, task)] == children


@pytest.mark.parametrize(
    ("depends_on", "parent", "matches"),
    [
        ("task1", "task1", True),
        ("task1", "task1:j4", True),
        ("task1:j4", "task1:j4", True),
        ("task1:j4", "task1", False),
        ("task1:j4", "task1:j5", False),
        ("task", "task1", False),
        ("", "task1", False),
    ],
)
def test_depends_on_matches(depends_on: str, parent: str, matches: bool) -> None:
    assert depends_on_matches(depends_on, parent) is matches


def test_a_file_name_that_is_not_utf8_loads_under_a_readable_key(
    catalog: Catalog, db: Database, workflow_dir: Path
) -> None:
    # given a file whose name holds a byte that is not UTF-8, beside a good file
    (workflow_dir / "good.toml").write_text(F2, encoding="utf-8")
    fd = os.open(os.fsencode(workflow_dir) + b"/bad\xff.toml", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, F2.replace("other", "odd").encode())
    os.close(fd)
    # when refreshed, then both load, the odd one under a key with U+FFFD for the byte
    result = catalog.refresh()
    assert sorted(result.changed) == ["bad\ufffd.toml", "good.toml"]
    assert stored_tasks(db, "bad\ufffd.toml") == ["odd"]
    assert catalog.refresh().keys == []


def test_a_path_too_long_to_store_is_an_error_of_its_own(
    catalog: Catalog, db: Database, workflow_dir: Path
) -> None:
    # given a file nested so deep that its key is wider than the file_path column, and a good one
    deep = workflow_dir.joinpath(*["d" * 200] * 6)
    deep.mkdir(parents=True)
    (deep / "w.toml").write_text(F2, encoding="utf-8")
    (workflow_dir / "good.toml").write_text(F2, encoding="utf-8")
    # when refreshed, then the good one loads and the deep one is reported, every time
    for _ in range(2):
        result = catalog.refresh()
        ((key, error),) = result.errors
        assert key.endswith("/w.toml") and "longer than 1024 characters" in error
    assert list(stored_files(db)) == ["good.toml"]


def test_changed_files_are_read_and_written_a_batch_at_a_time(
    catalog: Catalog,
    db: Database,
    write_workflow: WriteWorkflow,
    workflow_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given five files in sub-folders, one broken, and batches of two files
    monkeypatch.setattr(catalog_module, "FILES_PER_TRANSACTION", 2)
    events: list[str] = []
    reader, writer = catalog_module.read_source, catalog_module.store_files

    def read(path: str) -> tuple[bytes, object]:
        events.append("read")
        return reader(path)

    def store(conn: object, files: list[object], now: object) -> None:
        events.append(f"store {len(files)}")
        writer(conn, files, now)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_module, "read_source", read)
    monkeypatch.setattr(catalog_module, "store_files", store)
    names = ["b/two.toml", "a.toml", "b/c/three.toml", "b/broken.toml", "z.toml"]
    for name in names:
        write_workflow(name, "[[phase]\n" if "broken" in name else F2)
    # when refreshed
    result = catalog.refresh()
    # then each batch is written before the next is read, in key order, the broken file
    # stopping no other
    # (a.toml, b/broken.toml), (b/c/three.toml, b/two.toml), (z.toml); broken is no store_files row
    assert events == ["read", "read", "store 1", "read", "read", "store 2", "read", "store 1"]
    assert result.keys == sorted(names)
    assert [key for key, _ in result.errors] == ["b/broken.toml"]
    assert [key for key, error in stored_files(db).items() if not error] == [
        "a.toml", "b/c/three.toml", "b/two.toml", "z.toml"
    ]  # fmt: skip
    # and files removed together are reported in key order
    (workflow_dir / "z.toml").unlink()
    (workflow_dir / "a.toml").unlink()
    assert catalog.refresh().removed == ("a.toml", "z.toml")


def test_many_files_whose_stat_changed_are_looked_up_in_chunks(
    catalog: Catalog,
    write_workflow: WriteWorkflow,
    reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given five stored files, and stored rows looked up two keys at a time
    monkeypatch.setattr(workflows_module, "_KEYS_PER_QUERY", 2)
    paths = [write_workflow(f"f{n}.toml", F2) for n in range(5)]
    for path in paths:
        _age(path)
    catalog.refresh()
    # when every file is touched (same bytes, new mtime)
    for path in paths:
        _age(path, by_ns=HOUR_NS // 2)
    reads.clear()
    # then every one is read and found unchanged (its stored hash looked up), none reloaded
    assert catalog.refresh().keys == []
    assert sorted(reads) == [f"f{n}.toml" for n in range(5)]
    # and their new stat is kept: the next refresh reads none
    reads.clear()
    assert catalog.refresh().keys == []
    assert reads == []


def test_a_new_file_another_catalog_stored_meanwhile_is_replaced_not_a_duplicate_key(
    db: Database, workflow_dir: Path, write_workflow: WriteWorkflow, clock: ManualClock
) -> None:
    """The daemon and the command line refresh at the same moment: both find the file new."""
    write_workflow("new.toml", '[[phase]]\ntask = "a"\ntemplate = "echo a"\n')
    first, second = Catalog(db, workflow_dir, clock), Catalog(db, workflow_dir, clock)
    read_batch = first._read_batch

    def racing(*args):  # type: ignore[no-untyped-def]
        updates = read_batch(*args)
        second.refresh()  # stores new.toml after `first` found it new, before it writes
        return updates

    first._read_batch = racing  # type: ignore[method-assign]
    assert first.refresh().changed == ("new.toml",)
    with db.read() as conn:
        assert list(file_rows(conn)) == ["new.toml"]
        assert [(r.file_path, r.task) for r in phase_rows(conn)] == [("new.toml", "a")]
