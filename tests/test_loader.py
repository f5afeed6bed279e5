"""Loader: workflow files and folders → raw phases, keyed the way flowlord keys them."""

from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

import pytest

from scheduler.loader import (
    RawPhase,
    WorkflowSource,
    file_key,
    normalise_task,
    parse_bytes,
    read_phase,
)

WANT_COUNT = "invalid value: retry=%s (want a whole number of at least 0)"


def parse(text: str) -> tuple[RawPhase, ...]:
    load = parse_bytes("f.toml", textwrap.dedent(text).encode())
    assert load.error == ""
    return load.phases


@pytest.mark.parametrize(
    ("root", "path", "key"),
    [
        ("./path", "./path/file.toml", "file.toml"),
        ("./path/file.toml", "./path/file.toml", "file.toml"),  # single file: the base name
        ("./path", "./path/sub/file.toml", "sub/file.toml"),
        ("./path", "root/folder/path/file.toml", "file.toml"),  # embedded
        ("./path", "root/path/sub/file.toml", "sub/file.toml"),  # embedded sub
        ("path", "path/a/b/c.toml", "a/b/c.toml"),
        ("/abs/wf", "/abs/wf/x.toml", "x.toml"),
        ("./path", "./path/path/file.toml", "file.toml"),  # the LAST appearance of the root
        ("./path", "elsewhere/file.toml", "file.toml"),  # root not found: the base name
    ],
)
def test_file_key(root: str, path: str, key: str) -> None:
    # flowlord's filePath table: the key is what follows the root, "/"-separated
    assert file_key(root, path) == key


def test_folder_is_read_recursively_and_only_toml(workflow_dir: Path) -> None:
    # given a folder with workflows in sub-folders and other files beside them
    for name in ("a.toml", "sub/b.toml", "sub/deeper/c.toml"):
        (workflow_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (workflow_dir / name).write_text("")
    for name in ("README.md", "notes.txt", "sub/data.json", "a.toml.bak", "sub/.hidden.toml"):
        (workflow_dir / name).write_text("not toml [[[")
    # when its files are listed, then only the .toml files appear, by key, in key order
    files = WorkflowSource(workflow_dir).files()
    assert list(files) == ["a.toml", "sub/b.toml", "sub/deeper/c.toml"]
    assert files["sub/deeper/c.toml"] == workflow_dir / "sub/deeper/c.toml"
    assert WorkflowSource(workflow_dir).is_dir


def test_stat_all_is_scan_without_the_order(workflow_dir: Path) -> None:
    # given workflows in sub-folders, one of them a dangling link
    for name in ("z.toml", "sub/b.toml", "sub/deeper/c.toml"):
        (workflow_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (workflow_dir / name).write_text("[[phase]]")
    (workflow_dir / "sub" / "gone.toml").symlink_to(workflow_dir / "nowhere.toml")
    # when stat'ed in one walk, then each key carries the path, size and mtime scan gives it
    scanned = WorkflowSource(workflow_dir).scan()
    found = WorkflowSource(workflow_dir).stat_all()
    assert found == {key: (f.path, f.size, f.mtime_ns) for key, f in scanned.items()}
    assert list(scanned) == ["sub/b.toml", "sub/deeper/c.toml", "sub/gone.toml", "z.toml"]
    stat = os.stat(workflow_dir / "z.toml")
    assert found["z.toml"] == (str(workflow_dir / "z.toml"), stat.st_size, stat.st_mtime_ns)
    assert found["sub/gone.toml"][1:] == (-1, -1)  # stat failed: reading it reports why


def test_single_file_mode(workflow_dir: Path) -> None:
    path = workflow_dir / "one.toml"
    path.write_text("")
    source = WorkflowSource(path)
    assert not source.is_dir
    assert source.files() == {"one.toml": path}


def test_missing_single_file_lists_nothing(tmp_path: Path) -> None:
    assert WorkflowSource(tmp_path / "gone.toml").files() == {}


@pytest.mark.parametrize("table", ["phase", "Phase", "PHASE"])
@pytest.mark.parametrize("depends_key", ["dependsOn", "DependsOn", "depends_on", "DEPENDS_ON"])
def test_table_and_keys_match_case_insensitively(table: str, depends_key: str) -> None:
    # given flowlord's spellings of the table and keys, when parsed, then they all load
    phases = parse(
        f"""
        [[{table}]]
        Task = "task1"
        Rule = "cron=0 * * * *"
        [[{table}]]
        TASK = "task2"
        {depends_key} = "task1"
        Retry = 3
        Template = "{{meta:file}}"
        """
    )
    assert phases == (
        RawPhase(task="task1", rule="cron=0 * * * *"),
        RawPhase(task="task2", depends_on="task1", retry=3, template="{meta:file}"),
    )


def test_phase_and_Phase_in_one_file_are_joined() -> None:
    # flowlord's f1.toml mixes spellings; TOML sees two arrays, flowlord one
    phases = parse(
        """
        [[phase]]
        task = "a"
        rule = "cron=0 * * * *"
        [[Phase]]
        task = "b"
        dependsOn = "a"
        [[phase]]
        task = "c"
        DependsOn = "b"
        """
    )
    assert sorted(p.task for p in phases) == ["a", "b", "c"]
    assert {p.task: p.depends_on for p in phases} == {"a": "", "b": "a", "c": "b"}


def test_flowlord_toml_test_two_phases() -> None:
    phases = parse(
        """
        [[phase]]
        task = "task1"
        rule = "cron=0 * * * *&offset=-4h&job=t2&retry_delay=10ms"
        retry = 3
        template = "?date={yyyy}-{mm}-{dd}T{hh}"

        [[phase]]
        task = "task2"
        dependsOn = "task1"
        template = "{meta:file}?time={yyyy}-{mm}-{dd}"
        """
    )
    assert [(p.task, p.retry) for p in phases] == [("task1:t2", 3), ("task2", 0)]


@pytest.mark.parametrize(
    ("task", "rule", "stored"),
    [
        ("t2:j3", "", "t2:j3"),
        ("t2", "job=j1", "t2:j1"),
        ("t2:j3", "job=j1", "t2:j3"),  # the task's own job wins
        ("task1", "", "task1"),
        ("task1", "cron=0 * * * *", "task1"),
        ("task1", "job=", "task1"),
        ("t2", "job=a%20b", "t2:a b"),
        ("t2", "j%6Fb=j4", "t2:j4"),  # an escaped key that reads "job"
        ("t2", "job%3Dj5", "t2"),  # an escaped "=": the key is "job=j5", no value
        ("t2", "a;b&job=j1", "t2"),  # a rule too broken to read gives no job
    ],
)
def test_job_from_task_or_rule_normalises_the_task(task: str, rule: str, stored: str) -> None:
    assert normalise_task(task, rule) == stored
    assert read_phase({"task": task, "rule": rule}).task == stored


def test_unknown_phase_keys_are_kept_out_and_listed() -> None:
    # given keys the phase does not know, then they are listed (for warnings), not values
    raw = read_phase({"task": "a", "rule": "cron=0 * * * *", "owner": "me", "Colour": "red"})
    assert raw.unknown_keys == ("owner", "Colour")
    assert raw.problems == ()
    assert raw.task == "a"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"task": "a", "retry": "3"}, WANT_COUNT % "'3'"),
        ({"task": "a", "retry": -1}, WANT_COUNT % "-1"),
        ({"task": "a", "retry": True}, WANT_COUNT % "True"),
        ({"task": "a", "retry": 1.5}, WANT_COUNT % "1.5"),
        ({"task": "a", "rule": 5}, "invalid value: rule=5 (want a string)"),
        ({"task": "a", "dependsOn": ["b"]}, "invalid value: dependsOn=['b'] (want a string)"),
        ({"task": "a", "template": {"x": 1}}, "invalid value: template={'x': 1} (want a string)"),
        ({"task": 5}, "invalid value: task=5 (want a string)"),
        ({"task": "a", "dependsOn": "b", "depends_on": "c"}, "duplicate key: depends_on"),
    ],
)
def test_wrong_value_types_are_problems(table: dict[str, object], problem: str) -> None:
    # given a value of the wrong type, then it is a problem (an error later) and not used
    raw = read_phase(table)
    assert problem in raw.problems


@pytest.mark.parametrize(
    "table", [{"rule": "cron=0 * * * *"}, {"task": ""}, {"dependsOn": "a", "template": "x"}]
)
def test_missing_task_is_a_problem(table: dict[str, object]) -> None:
    assert "missing key: task" in read_phase(table).problems


def test_retry_zero_is_fine() -> None:
    assert read_phase({"task": "a", "retry": 0}) == RawPhase(task="a", retry=0)


@pytest.mark.parametrize(
    ("data", "error_start"),
    [
        (b"[[phase]\ntask = 'a'\n", "invalid TOML: "),
        (b"task = \n", "invalid TOML: "),
        (b"[[phase]]\ntask = 'a'\ntask = 'b'\n", "invalid TOML: "),
        (b"[[phase]]\ntask = '\xff\xfe'\n", "not UTF-8 text: byte 18"),
        (b"\xff\xfe[\x00[\x00", "not UTF-8 text: byte 0"),
        (b"phase = 'x'\n", "'phase' must be an array of tables"),
        (b"[phase]\ntask = 'x'\n", "'phase' must be an array of tables"),
        (b"phase = [1, 2]\n", "'phase' must be an array of tables"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "invalid TOML: "),  # too deep to read
    ],
    ids=lambda value: repr(value)[:40],
)
def test_unreadable_file_is_a_file_error(data: bytes, error_start: str) -> None:
    # given bytes that are not a workflow file, when parsed, then the load carries the error
    load = parse_bytes("bad.toml", data)
    assert load.error.startswith(error_start)
    assert load.phases == ()
    assert load.file_hash == hashlib.md5(data).hexdigest()
    assert load.file_path == "bad.toml"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"# only a comment\n",
        b"[[Workflow]]\ntask = 'a'\n",  # flowlord's old f3.toml: an unknown table, 0 phases
        b"phase = []\n",
        b"[[phase]]\n",  # an empty table is no phase
    ],
)
def test_files_without_phases_load_empty(data: bytes) -> None:
    load = parse_bytes("empty.toml", data)
    assert (load.error, load.phases) == ("", ())


def test_byte_order_mark_is_accepted() -> None:
    # editors on Windows save UTF-8 with a BOM; the file is still a workflow
    load = parse_bytes("bom.toml", b"\xef\xbb\xbf[[phase]]\ntask = 'a'\nrule = 'cron=@daily'\n")
    assert load.error == ""
    assert [p.task for p in load.phases] == ["a"]


def test_hash_is_md5_of_the_bytes() -> None:
    data = b"[[phase]]\ntask = 'a'\n"
    assert parse_bytes("a.toml", data).file_hash == hashlib.md5(data).hexdigest()
