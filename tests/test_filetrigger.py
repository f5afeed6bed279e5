"""File triggers: Go-style globs, the rows a reported file fires, and ``tomlflow file`` end to end
(real database, real ``tomlflow run --once`` with a real subprocess)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.catalog import Catalog
from scheduler.cli import main
from scheduler.filetrigger import rows_for_file
from scheduler.globs import check, match
from scheduler.store.db import Database
from scheduler.store.history import Execution, Status, Trigger
from scheduler.store.schema import executions
from scheduler.validation import PhaseSpec
from tests.conftest import SITE_DATABASE, WriteWorkflow, make_site

NOW = datetime(2024, 3, 4, 5, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        # flowlord's cases (notes §7)
        ("gs://*/*/*.txt", "gs://bucket/path/file.txt", True),
        ("gs://*/*/*.txt", "/path/to/file.txt", False),
        ("gs://*/*/data.txt", "gs://bucket/group/data.txt", True),
        # * and ? never cross /
        ("/data/*.csv", "/data/a.csv", True),
        ("/data/*.csv", "/data/sub/a.csv", False),
        ("/data/*", "/data/", True),
        ("*", "a/b", False),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "axxbyy/c", False),
        # no ** : two stars are two single-segment stars
        ("/data/**/x.csv", "/data/a/b/x.csv", False),
        ("/data/**/x.csv", "/data/a/x.csv", True),
        # the whole path must match
        ("*.csv", "a.csv.gz", False),
        ("data", "data/x", False),
        # classes, ranges, negation with ^, escapes
        ("[abc].txt", "b.txt", True),
        ("[abc].txt", "d.txt", False),
        ("f[0-9][0-9].gz", "f42.gz", True),
        ("f[0-9].gz", "fx.gz", False),
        ("[^a-c]x", "dx", True),
        ("[^a-c]x", "bx", False),
        ("a[^x]b", "a/b", True),  # a class may match / (as in Go)
        ("[\\]]", "]", True),
        ("[\\-]", "-", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("[z-a]", "m", False),  # a reversed range matches nothing
        # regex characters are literal
        ("f.(1)+$.txt", "f.(1)+$.txt", True),
        ("f.txt", "fxtxt", False),
        # malformed patterns match nothing
        ("[abc", "a", False),
        ("a\\", "a\\", False),
        ("[]a]", "]", False),
        ("[-a]", "-", False),
        ("[a-]", "a", False),
    ],
)
def test_match_follows_go_filepath_match(pattern: str, path: str, matches: bool) -> None:
    assert match(pattern, path) is matches


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("gs://*/*.txt", None), ("[abc", "malformed [ class"), ("x\\", "trailing \\")],
)
def test_check_names_a_malformed_pattern(pattern: str, problem: str | None) -> None:
    result = check(pattern)
    assert result == problem if problem is None else problem in (result or "")


BASIC = """
[[phase]]
task = "basic"
rule = "files=gs://*/*/*.txt"
template = "load {meta:file} {yyyy}-{mm}-{dd}T{hh}"
"""
DATA = """
[[phase]]
task = "data"
rule = "files=gs://*/*/data.txt&job=1"
template = "data {meta:filename}"

[[phase]]
task = "child"
depends_on = "data"
template = "child"
"""


@pytest.fixture
def specs(write_workflow: WriteWorkflow, catalog: Catalog) -> list[PhaseSpec]:
    write_workflow("basic.toml", BASIC)
    write_workflow("data.toml", DATA)
    catalog.refresh()
    return catalog.phases()


def test_one_matching_rule_fires_one_task(specs: list[PhaseSpec], workflow_dir: Path) -> None:
    rows = rows_for_file(specs, "gs://bucket/path/file.txt", NOW, workflow_dir)
    assert [(r.task, dict(r.meta)) for r in rows] == [
        (
            "basic",
            {"file": "gs://bucket/path/file.txt", "filename": "file.txt", "workflow": "basic.toml"},
        )
    ]
    assert rows[0].trigger is Trigger.FILE and rows[0].status is Status.QUEUED
    assert rows[0].task_time == NOW  # the path names no time
    assert rows[0].info == "load gs://bucket/path/file.txt 2024-03-04T05"


def test_two_matching_rules_fire_two_tasks_with_their_own_meta_and_job(
    specs: list[PhaseSpec], workflow_dir: Path
) -> None:
    rows = rows_for_file(specs, "gs://bucket/group/data.txt", NOW, workflow_dir)
    by_task = {r.task: r for r in rows}
    assert sorted(by_task) == ["basic", "data:1"]
    assert dict(by_task["data:1"].meta) == {
        "file": "gs://bucket/group/data.txt",
        "filename": "data.txt",
        "job": "1",
        "workflow": "data.toml",
    }
    assert by_task["data:1"].info == "data data.txt"
    assert by_task["basic"].meta["workflow"] == "basic.toml"
    assert by_task["basic"].task_id != by_task["data:1"].task_id  # two chains


def test_no_match_fires_nothing(specs: list[PhaseSpec], workflow_dir: Path) -> None:
    assert rows_for_file(specs, "/path/to/file.txt", NOW, workflow_dir) == []


@pytest.mark.parametrize(
    ("path", "task_time"),
    [
        ("gs://b/2024/01/02/13/f.dat", datetime(2024, 1, 2, 13, tzinfo=UTC)),
        ("gs://b/x/20240102T130405.dat", datetime(2024, 1, 2, 13, 4, 5, tzinfo=UTC)),
        ("gs://b/x/2024-01-02.dat", datetime(2024, 1, 2, tzinfo=UTC)),
        ("gs://b/x/none.dat", NOW),
    ],
)
def test_task_time_comes_from_the_path(
    write_workflow: WriteWorkflow,
    catalog: Catalog,
    workflow_dir: Path,
    path: str,
    task_time: datetime,
) -> None:
    write_workflow("times.toml", """
        [[phase]]
        task = "deep"
        rule = "files=gs://b/*/*/*/*/*.dat"

        [[phase]]
        task = "flat"
        rule = "files=gs://b/*/*.dat"
    """)  # fmt: skip
    catalog.refresh()
    (row,) = rows_for_file(catalog.phases(), path, NOW, workflow_dir)
    assert row.task_time == task_time


def test_phase_with_errors_never_fires(
    write_workflow: WriteWorkflow, catalog: Catalog, workflow_dir: Path
) -> None:
    write_workflow("bad.toml", """
        [[phase]]
        task = "bad"
        rule = "files=/in/*.csv&cron=not a cron"
        template = "x"
    """)  # fmt: skip
    catalog.refresh()
    assert rows_for_file(catalog.phases(), "/in/a.csv", NOW, workflow_dir) == []


# -- tomlflow file, end to end --------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A config, a workflow with a files= phase whose command prints {meta:file}."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    code = "import sys; print('got', sys.argv[1], sys.argv[2])"
    template = f"{sys.executable} -c {json.dumps(code)} {{meta:file}} {{yyyy}}{{mm}}{{dd}}"
    ingest = textwrap.dedent(f"""
        [[phase]]
        task = "ingest"
        rule = "files={inbox}/*/*.csv"
        template = {json.dumps(template)}
        """)
    yield make_site(tmp_path, {"ingest.toml": ingest}, monkeypatch=monkeypatch)


def stored(site: Path) -> list[Execution]:
    db = Database(f"sqlite:///{site / SITE_DATABASE}")
    try:
        with db.read() as conn:
            rows = conn.execute(select(executions).order_by(executions.c.id))
            return [Execution.from_row(row) for row in rows]
    finally:
        db.close()


def test_file_command_queues_and_run_once_executes_with_meta_file(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a reported file, by a path relative to the current folder
    (site / "inbox" / "2024-05-06").mkdir()
    (site / "inbox" / "2024-05-06" / "a.csv").write_text("x\n")
    assert main(["file", "inbox/2024-05-06/a.csv"]) == 0
    full = str(site / "inbox" / "2024-05-06" / "a.csv")
    out = capsys.readouterr().out
    assert "queued ingest (ingest.toml) for 2024-05-06T00:00:00.000000Z: " in out
    # When the scheduler runs once
    assert main(["run", "--once"]) == 0
    # Then the phase ran with {meta:file} rendered to the absolute path, and the path's date
    (row,) = stored(site)
    assert (row.status, row.trigger, row.meta["file"], row.meta["filename"]) == (
        Status.COMPLETE, Trigger.FILE, full, "a.csv",
    )  # fmt: skip
    assert main(["logs", str(row.id)]) == 0
    assert f"got {full} 20240506" in capsys.readouterr().out


def test_file_command_without_match_exits_1(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["file", "/elsewhere/a.csv"]) == 1
    assert "no phase matches /elsewhere/a.csv" in capsys.readouterr().err
    assert stored(site) == []


def test_file_command_json(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["file", "--json", str(site / "inbox" / "x" / "b.csv")]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["task"] == "ingest" and item["status"] == "queued"
    assert item["meta"]["filename"] == "b.csv"
    assert len(stored(site)) == 1
