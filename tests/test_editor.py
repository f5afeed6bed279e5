"""Round-trip editing of workflow files: only the edited phase's lines change, refused edits
write nothing, and concurrent edits neither lose updates nor leave a half-written file."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler import editor
from scheduler.editor import Edit, Kind
from scheduler.errors import ConcurrentEditError, WorkflowError
from scheduler.loader import parse_bytes, read_phase
from scheduler.validation import Severity, validate_file

# A hand-written file: comments everywhere, odd spacing, every spelling flowlord accepts.
COMMENTED = textwrap.dedent(
    '''\
    # Orders pipeline.   Owner: data team
    #
    # Keep the phases in run order.

    # Pulls yesterday's orders.
    [[Phase]]
    Task = "extract:orders"        # the source
    Rule = "cron=0 5 * * *&offset=-24h"
    # no retries: the source is idempotent

    [[phase]]   # lower case on purpose
    task   =   "transform"
    dependsOn = "extract"   # any extract job
      retry=2

    # comment before report
    [[Phase]]
    task = "report"
    DependsOn = "transform"
    template = """
    report for {yyyy}-{mm}-{dd}
    [[phase]]
    """   # not a table
    # trailing note
    '''
)


def changed_lines(before: str, after: str) -> list[str]:
    """The -/+ lines of a zero-context diff, in order."""
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm="")
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def statuses(key: str, text: str) -> dict[str, str]:
    load = parse_bytes(key, text.encode())
    return {spec.task: spec.status for spec in validate_file(key, load.phases)}


# --- reading --------------------------------------------------------------------------------


def test_an_unedited_file_splits_into_blocks_that_join_back_byte_for_byte() -> None:
    document = editor.parse_document(COMMENTED, "orders.toml")

    assert document.render() == COMMENTED
    assert [b.is_phase for b in document.blocks] == [True, True, True]
    # comments directly above a header belong to that phase; the file's header comment does not
    assert document.blocks[0].text.startswith("# Pulls yesterday's orders.\n[[Phase]]")
    assert document.blocks[2].text.startswith("# comment before report\n")
    assert [e.raw.task for e in document.phases()] == ["extract:orders", "transform", "report"]


@pytest.mark.parametrize(
    ("chunk", "kind", "name"),
    [
        ("\n", Kind.BLANK, ""),
        ("   # note\n", Kind.COMMENT, ""),
        ("[[Phase]]  # c\n", Kind.HEADER, "Phase"),
        ('  "depends_on" = "x"\n', Kind.PAIR, "depends_on"),
        ('template = """\n[[phase]]\n"""\n', Kind.PAIR, "template"),
    ],
)
def test_statements_are_classified_by_the_toml_parser(chunk: str, kind: Kind, name: str) -> None:
    statement = editor.classify(chunk)

    assert (statement.kind, statement.name) == (kind, name)


def test_a_table_header_inside_a_multiline_string_is_not_a_table() -> None:
    text = '[[phase]]\ntask = "a"\nrule = "cron=* * * * *"\ntemplate = """\n[[phase]]\n"""\n'

    document = editor.parse_document(text, "a.toml")

    assert len(document.blocks) == 1


@pytest.mark.parametrize(
    "text",
    [
        '[[phase]]\ntask = "a"\nrule = "cron=* * * * *"\n[phase.extra]\nx = 1\n',
        'phase = [{task = "a", rule = "cron=* * * * *"}]\n',
    ],
)
def test_a_layout_the_editor_cannot_splice_safely_is_refused(text: str) -> None:
    with pytest.raises(WorkflowError, match="cannot edit safely"):
        editor.parse_document(text, "odd.toml")


@pytest.mark.parametrize("spelling", ["task", "Task", "RULE", "dependsOn", "DependsOn",
                                      "depends_on", "Depends_On", "retry", "Template"])
def test_canonical_key_agrees_with_the_loader(spelling: str) -> None:
    canonical = editor.canonical_key(spelling)
    value: str | int = 3 if canonical == "retry" else "x"

    raw = read_phase({spelling: value})

    assert canonical is not None
    assert getattr(raw, canonical) == value
    assert raw.unknown_keys == ()


# --- set ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "changes", "diff"),
    [
        (
            "transform",
            {"retry": 5},
            ["-  retry=2", "+  retry=5"],
        ),
        (
            # an existing key under another spelling is changed in place, comment kept
            "transform",
            {"depends_on": "extract:orders"},
            ['-dependsOn = "extract"   # any extract job',
             '+dependsOn = "extract:orders"   # any extract job'],
        ),
        (
            # a new key goes after the phase's last key, indented like it
            "transform",
            {"template": "run {yyyy}"},
            ['+  template = "run {yyyy}"'],
        ),
        (
            "extract:orders",
            {"rule": "cron=0 6 * * *&offset=-24h"},
            ['-Rule = "cron=0 5 * * *&offset=-24h"', '+Rule = "cron=0 6 * * *&offset=-24h"'],
        ),
        (
            # a multi-line value becomes one line; the comment after it stays
            "report",
            {"template": "echo report"},
            ['-template = """', "-report for {yyyy}-{mm}-{dd}", "-[[phase]]",
             '-"""   # not a table', '+template = "echo report"   # not a table'],
        ),
        (
            "transform",
            {"retry": None},
            ["-  retry=2"],
        ),
        (
            "extract",  # a bare topic finds its only job
            {"task": "extract:daily"},
            ['-Task = "extract:orders"        # the source',
             '+Task = "extract:daily"        # the source'],
        ),
    ],
)
def test_set_changes_only_the_lines_of_the_edited_key(
    task: str, changes: dict[str, str | int | None], diff: list[str]
) -> None:
    edit = editor.set_phase(COMMENTED, "orders.toml", task, changes)

    assert changed_lines(COMMENTED, edit.text) == diff


def test_set_in_place_fixes_a_key_written_twice_under_two_spellings() -> None:
    text = '[[phase]]\ntask = "a"\nrule = "cron=* * * * *"\n[[phase]]\ntask = "b"\n' \
           'dependsOn = "a"\ndepends_on = "a"\n'
    assert "duplicate key" in statuses("f.toml", text)["b"]

    edit = editor.set_phase(text, "f.toml", "b", {"depends_on": "a"})

    assert changed_lines(text, edit.text) == ['-depends_on = "a"']
    assert statuses("f.toml", edit.text)["b"] == ""


def test_set_keeps_crlf_line_endings() -> None:
    text = '[[phase]]\r\ntask = "a"\r\nrule = "cron=* * * * *"\r\n'

    edit = editor.set_phase(text, "f.toml", "a", {"retry": 1})

    assert edit.text == '[[phase]]\r\ntask = "a"\r\nrule = "cron=* * * * *"\r\nretry = 1\r\n'


def test_set_reports_an_unknown_rule_key_as_a_warning_not_a_refusal() -> None:
    edit = editor.set_phase(COMMENTED, "orders.toml", "transform", {"rule": "colour=red"})

    assert edit.warnings == ("unknown key: colour",)


def test_set_renames_a_task_and_its_job_can_come_from_the_rule() -> None:
    edit = editor.set_phase(COMMENTED, "orders.toml", "report", {"rule": "job=daily"})

    assert edit.task == "report:daily"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("nothing", "no phase with task 'nothing'"),
        ("x", "'x' matches x:a, x:b; name the job too"),
        ("y", "task y is defined 2 times"),
    ],
)
def test_a_task_that_names_no_single_phase_is_an_error(task: str, message: str) -> None:
    text = "".join(
        f'[[phase]]\ntask = "{t}"\nrule = "cron=* * * * *"\n' for t in ("x:a", "x:b", "y", "y")
    )

    with pytest.raises(WorkflowError, match=message):
        editor.set_phase(text, "f.toml", task, {"retry": 1})


# --- add ------------------------------------------------------------------------------------


def test_add_appends_a_phase_in_the_files_spelling_and_touches_nothing_else() -> None:
    edit = editor.add_phase(
        COMMENTED, "orders.toml", {"task": "publish", "depends_on": "report", "retry": 1}
    )

    # [[Phase]] is used twice, [[phase]] once; dependsOn and DependsOn tie: the first wins
    assert changed_lines(COMMENTED, edit.text) == [
        "+", "+[[Phase]]", '+task = "publish"', '+dependsOn = "report"', "+retry = 1",
    ]
    assert edit.task == "publish"


@pytest.mark.parametrize(
    ("text", "header", "depends"),
    [
        ("", "[[phase]]", "depends_on"),
        ('[[phase]]\ntask = "a"\nrule = "cron=* * * * *"\n', "[[phase]]", "depends_on"),
        ('[[PHASE]]\nTask = "a"\nRule = "cron=* * * * *"\n', "[[PHASE]]", "DependsOn"),
        ('[[phase]]\ntask = "a"\nrule = "cron=* * * * *"\n[[phase]]\ntask = "b"\n'
         'DependsOn = "a"\n', "[[phase]]", "DependsOn"),
    ],
)
def test_new_keys_follow_the_files_dominant_spelling(text: str, header: str, depends: str) -> None:
    # "a" exists only in the non-empty files; in the empty one the parent check refuses,
    # so give it its own parent first.
    base = text or '[[phase]]\ntask = "a"\nrule = "cron=* * * * *"\n'
    edit = editor.add_phase(base, "f.toml", {"task": "c", "depends_on": "a"})

    added = edit.text[len(base):].splitlines()
    assert header in added
    assert f'{depends} = "a"' in added


def test_add_to_a_file_without_a_final_newline_keeps_the_other_lines() -> None:
    text = '[[phase]]\ntask = "a"\nrule = "cron=* * * * *"'

    edit = editor.add_phase(text, "f.toml", {"task": "b", "depends_on": "a"})

    assert edit.text == text + '\n\n[[phase]]\ntask = "b"\ndepends_on = "a"\n'


# --- refusals -------------------------------------------------------------------------------


REFUSED = [
    ("add", {"task": "solo"}, "[solo]: refused: non-scheduled phase"),
    ("add", {"task": "c", "rule": "cron=0 5 * * *;x"}, "refused: invalid rule format"),
    ("add", {"task": "c", "rule": "cron=61 * * * *"}, "refused: invalid cron: 61 * * * *"),
    ("add", {"task": "c", "depends_on": "nope"}, "refused: parent task not found: nope"),
    ("add", {"task": "transform", "depends_on": "extract"}, "refused: duplicate task"),
    ("add", {"task": "c", "depends_on": "report", "retry": -1}, "refused: invalid value: retry"),
    ("set", {"depends_on": "report"}, "refused: dependency cycle"),
    ("set", {"task": "report"}, "duplicate task: report defined 2 times"),
    ("set", {"depends_on": None}, "[transform]: refused: non-scheduled phase"),
    ("rename-parent", {"task": "extract:daily"}, "refused: parent task not found: extract:orders"),
]


@pytest.mark.parametrize(("operation", "values", "message"), REFUSED)
def test_an_edit_that_breaks_a_phase_is_refused_and_the_file_is_byte_identical(
    tmp_path: Path, operation: str, values: dict[str, str | int | None], message: str
) -> None:
    text = COMMENTED.replace('dependsOn = "extract"', 'dependsOn = "extract:orders"')
    path = tmp_path / "orders.toml"
    path.write_text(text, encoding="utf-8")

    def change(current: str) -> Edit:
        if operation == "add":
            return editor.add_phase(current, "orders.toml", values)  # type: ignore[arg-type]
        if operation == "rename-parent":
            return editor.set_phase(current, "orders.toml", "extract:orders", values)
        return editor.set_phase(current, "orders.toml", "transform", values)

    with pytest.raises(WorkflowError, match=message.replace("[", r"\[")):
        editor.edit_file(path, "orders.toml", change)

    assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.toml"]  # no temp file left


def test_a_phase_already_in_error_does_not_block_edits_to_others_or_its_own_repair() -> None:
    broken = COMMENTED.replace("cron=0 5 * * *", "cron=99 5 * * *")
    assert statuses("o.toml", broken)["extract:orders"].startswith("invalid cron")

    other = editor.set_phase(broken, "o.toml", "transform", {"retry": 3})
    fixed = editor.set_phase(other.text, "o.toml", "extract", {"rule": "cron=0 5 * * *"})

    assert all(status == "" for status in statuses("o.toml", fixed.text).values())


# --- remove ---------------------------------------------------------------------------------


def test_removing_a_parent_is_refused_unless_cascade_which_removes_children_transitively() -> None:
    with pytest.raises(WorkflowError, match=r"depend on it: transform, report \(--cascade"):
        editor.remove_phase(COMMENTED, "orders.toml", "extract:orders")

    edit = editor.remove_phase(COMMENTED, "orders.toml", "extract:orders", cascade=True)

    assert edit.removed == ("transform", "report")
    assert edit.text == COMMENTED[: COMMENTED.index("\n\n") + 1]  # the file's own comments


def test_remove_takes_the_phases_own_comments_and_leaves_the_rest() -> None:
    edit = editor.remove_phase(COMMENTED, "orders.toml", "report")

    removed = changed_lines(COMMENTED, edit.text)
    assert removed[0] == "-"  # the blank line that separated it from the phase above
    assert removed[1] == "-# comment before report"
    assert removed[-1] == "-# trailing note"
    assert all(line.startswith("-") for line in removed)
    assert edit.text.endswith("  retry=2\n")


def test_remove_is_allowed_when_another_phase_of_the_topic_still_satisfies_children() -> None:
    text = COMMENTED.replace(
        "\n[[phase]]   # lower",
        '\n[[phase]]\ntask = "extract:returns"\nrule = "cron=0 6 * * *"\n\n[[phase]]   # lower',
    )

    edit = editor.remove_phase(text, "orders.toml", "extract:orders")

    assert edit.removed == ()
    assert all(status == "" for status in statuses("orders.toml", edit.text).values())


# --- fmt ------------------------------------------------------------------------------------


MESSY = (
    "\n\n# head   \n"
    "[[ phase ]]   # first\n"
    "\n"
    '   task="a"   \n'
    'rule   =   "cron=* * * * *"  # every minute  \n'
    "\n\n\n"
    "  # about b\n"
    "[[phase]]\n"
    'task = "b"\n'
    'depends_on= "a"\n'
    'template = """\n  keep   \n\n\n  these   \n"""   \n'
    "\n\n"
)
TIDY = (
    "# head\n"
    "[[phase]]   # first\n"
    'task = "a"\n'
    'rule = "cron=* * * * *"  # every minute\n'
    "\n"
    "# about b\n"
    "[[phase]]\n"
    'task = "b"\n'
    'depends_on = "a"\n'
    'template = """\n  keep   \n\n\n  these   \n"""\n'
)


def test_fmt_normalises_spacing_and_never_string_contents() -> None:
    formatted = editor.format_text(MESSY, "f.toml")

    assert formatted == TIDY
    assert tomllib.loads(formatted) == tomllib.loads(MESSY)


@pytest.mark.parametrize("text", [MESSY, TIDY, COMMENTED, "", "\n\n", "# only a comment"])
def test_fmt_is_idempotent(text: str) -> None:
    once = editor.format_text(text, "f.toml")

    assert editor.format_text(once, "f.toml") == once


def test_fmt_of_a_tidy_hand_written_file_changes_only_spacing_lines() -> None:
    formatted = editor.format_text(COMMENTED, "orders.toml")

    assert changed_lines(COMMENTED, formatted) == [
        '-task   =   "transform"', '+task = "transform"', "-  retry=2", "+retry = 2",
    ]


def test_fmt_refuses_invalid_toml() -> None:
    with pytest.raises(WorkflowError, match=r"f\.toml: invalid TOML"):
        editor.format_text("[[phase]\n", "f.toml")


# --- files ----------------------------------------------------------------------------------


def test_an_edit_keeps_the_files_permission_bits(tmp_path: Path) -> None:
    path = tmp_path / "orders.toml"
    path.write_text(COMMENTED, encoding="utf-8")
    path.chmod(0o640)

    editor.edit_file(path, "o", lambda text: editor.set_phase(text, "o", "report", {"retry": 1}))

    assert path.stat().st_mode & 0o777 == 0o640
    assert "retry = 1" in path.read_text(encoding="utf-8")


def test_a_change_by_another_writer_during_the_edit_is_refused_not_overwritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.toml"
    path.write_text(COMMENTED, encoding="utf-8")
    theirs = COMMENTED + "# their change\n"

    def change(text: str) -> Edit:
        path.write_text(theirs, encoding="utf-8")  # another program writes meanwhile
        return editor.set_phase(text, "orders.toml", "report", {"retry": 1})

    with pytest.raises(ConcurrentEditError, match="changed by another program"):
        editor.edit_file(path, "orders.toml", change)

    assert path.read_text(encoding="utf-8") == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.toml"]


def test_create_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "new.toml"
    editor.create_file(path, "sub/new.toml", "# mine\n")

    with pytest.raises(WorkflowError, match=r"sub/new\.toml: already exists"):
        editor.create_file(path, "sub/new.toml", "# other\n")

    assert path.read_text(encoding="utf-8") == "# mine\n"
    assert [p.name for p in path.parent.iterdir()] == ["new.toml"]


def test_the_new_workflow_example_is_a_valid_workflow_once_uncommented() -> None:
    text = editor.new_workflow_text("etl.toml")
    example = "\n".join(
        line[2:] for line in text.splitlines() if line.startswith(("# [[", "# task", "# rule",
                                                                      "# depends", "# retry",
                                                                      "# template"))
    )

    assert parse_bytes("etl.toml", text.encode()).phases == ()
    load = parse_bytes("etl.toml", example.encode())
    specs = validate_file("etl.toml", load.phases)
    assert [(s.task, s.severity) for s in specs] == [
        ("extract:orders", Severity.OK), ("load", Severity.OK)
    ]


@pytest.mark.parametrize(
    ("name", "key"),
    [("etl", "etl.toml"), ("etl.toml", "etl.toml"), ("sub/etl", "sub/etl.toml")],
)
def test_new_file_path_adds_the_extension_and_allows_sub_folders(
    tmp_path: Path, name: str, key: str
) -> None:
    assert editor.new_file_path(tmp_path, name) == (tmp_path / key, key)


@pytest.mark.parametrize("name", ["../etl", "/etc/etl", ".hidden", "sub/.x", "a//b", ""])
def test_new_file_path_refuses_names_the_loader_would_not_read(tmp_path: Path, name: str) -> None:
    with pytest.raises(WorkflowError, match="relative path"):
        editor.new_file_path(tmp_path, name)


# --- concurrency ----------------------------------------------------------------------------


def _phases_file(count: int) -> str:
    return "".join(
        f'# phase {i}\n[[phase]]\ntask = "t{i}"\nrule = "cron=* * * * *"\nretry = 0\n\n'
        for i in range(count)
    )


def _retries(path: Path) -> dict[str, int]:
    load = parse_bytes("f.toml", path.read_bytes())
    assert load.error == ""
    return {phase.task: phase.retry for phase in load.phases}


def test_threads_hammering_set_on_one_file_lose_no_update_and_never_tear_it(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(_phases_file(4), encoding="utf-8")
    rounds, stop, seen_broken = 15, threading.Event(), []

    def writer(task: str) -> None:
        for value in range(1, rounds + 1):
            editor.edit_file(path, "f.toml", _setter(task, value))

    def reader() -> None:
        while not stop.is_set():
            load = parse_bytes("f.toml", path.read_bytes())
            if load.error or len(load.phases) != 4:
                seen_broken.append(load.error or "phases lost")

    threads = [threading.Thread(target=writer, args=(f"t{i}",)) for i in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()

    assert seen_broken == []
    assert _retries(path) == {f"t{i}": rounds for i in range(4)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.toml"]


def _setter(task: str, retry: int) -> Callable[[str], Edit]:
    return lambda text: editor.set_phase(text, "f.toml", task, {"retry": retry})


WORKER = """
import sys
from pathlib import Path
from scheduler import editor
path, task, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for value in range(1, rounds + 1):
    editor.edit_file(path, "f.toml",
                     lambda t: editor.set_phase(t, "f.toml", task, {"retry": value}))
"""


def test_two_processes_editing_one_file_serialise(tmp_path: Path) -> None:
    path = tmp_path / "f.toml"
    path.write_text(_phases_file(2), encoding="utf-8")
    rounds = 25

    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), f"t{i}", str(rounds)],
                         env={**os.environ, "PYTHONWARNINGS": "error"})
        for i in range(2)
    ]

    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    assert _retries(path) == {"t0": rounds, "t1": rounds}
    assert path.read_text(encoding="utf-8").startswith("# phase 0\n[[phase]]\n")
