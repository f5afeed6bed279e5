"""The editing commands (workflow new, phase add|set|rm, fmt) run through ``main`` as a user
would: output, exit codes, one-line errors, and files that stay byte-identical when refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.catalog import Catalog
from scheduler.cli import main

PIPELINE = """\
# nightly pipeline

[[Phase]]
task = "extract"   # source
rule = "cron=0 5 * * *"

[[Phase]]
task = "load"
dependsOn = "extract"
"""


@pytest.fixture
def config(tmp_path: Path, workflow_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A config file whose workflow folder is ``workflow_dir``; run from elsewhere."""
    path = tmp_path / "tomlflow.toml"
    path.write_text(
        f'[scheduler]\nworkflows = "{workflow_dir}"\ndatabase = "sqlite:///{tmp_path}/t.db"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    return str(path)


@pytest.fixture
def pipeline(workflow_dir: Path) -> Path:
    path = workflow_dir / "sub" / "etl.toml"
    path.parent.mkdir()
    path.write_text(PIPELINE, encoding="utf-8")
    return path


def run(config: str, *args: str) -> int:
    return main([*args, "--config", config])


def test_workflow_new_creates_a_commented_file_and_refuses_to_overwrite_it(
    config: str, workflow_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "workflow", "new", "team/etl") == 0
    path = workflow_dir / "team" / "etl.toml"
    assert f"created {path}" in capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# team/etl.toml: a tomlflow workflow.")

    assert run(config, "workflow", "new", "team/etl.toml") == 2
    assert capsys.readouterr().err == "error: team/etl.toml: already exists\n"
    assert path.read_text(encoding="utf-8") == text


def test_workflow_new_refuses_a_name_outside_the_folder(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "workflow", "new", "../escape") == 2
    assert "relative path" in capsys.readouterr().err


def test_phase_add_then_set_then_rm_edit_in_the_files_spelling(
    config: str, pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "phase", "add", "sub/etl", "--task", "report", "--depends-on", "load",
               "--retry", "2", "--template", "echo {yyyy}") == 0
    assert pipeline.read_text(encoding="utf-8") == PIPELINE + (
        '\n[[Phase]]\ntask = "report"\ndependsOn = "load"\nretry = 2\ntemplate = "echo {yyyy}"\n'
    )

    assert run(config, "phase", "set", "sub/etl.toml", "report", "--retry", "3",
               "--unset", "template") == 0
    assert run(config, "phase", "rm", str(pipeline), "report") == 0

    assert pipeline.read_text(encoding="utf-8") == PIPELINE
    assert capsys.readouterr().out.splitlines() == [
        "added sub/etl.toml [report]",
        "updated sub/etl.toml [report]",
        "removed sub/etl.toml [report]",
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["phase", "add", "sub/etl", "--task", "x", "--depends-on", "nobody"],
         "error: sub/etl.toml [x]: refused: parent task not found: nobody"),
        (["phase", "add", "sub/etl", "--task", "x", "--rule", "cron=0 25 * * *"],
         "error: sub/etl.toml [x]: refused: invalid cron: 0 25 * * * hour: 25 out of range 0-23"),
        (["phase", "set", "sub/etl", "extract", "--depends-on", "load"],
         "error: sub/etl.toml [extract]: refused: dependency cycle"),
        (["phase", "set", "sub/etl", "load", "--unset", "dependsOn"],
         "error: sub/etl.toml [load]: refused: non-scheduled phase"),
        (["phase", "set", "sub/etl", "nobody", "--retry", "1"],
         "error: sub/etl.toml: no phase with task 'nobody'"),
        (["phase", "rm", "sub/etl", "extract"],
         "error: sub/etl.toml [extract]: refused: other phases depend on it: load"),
        (["phase", "set", "sub/etl", "load"], "error: nothing to change"),
        (["phase", "set", "sub/etl", "load", "--unset", "task"],
         "error: Invalid value for --unset"),
        (["phase", "add", "missing", "--task", "x"], "error: missing: no such workflow file"),
    ],
)
def test_a_refused_edit_is_one_line_exit_2_and_the_file_is_byte_identical(
    config: str, pipeline: Path, capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    before = pipeline.read_bytes()

    assert run(config, *args) == 2

    err = capsys.readouterr().err
    assert err.startswith(error)
    assert err.count("\n") == 1
    assert pipeline.read_bytes() == before


def test_phase_rm_cascade_lists_what_it_removed(
    config: str, pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "phase", "rm", "sub/etl", "extract", "--cascade") == 0

    assert capsys.readouterr().out.splitlines() == [
        "removed sub/etl.toml [extract]",
        "removed sub/etl.toml [load] (cascade)",
    ]
    assert pipeline.read_text(encoding="utf-8") == "# nightly pipeline\n"


def test_an_unknown_rule_key_is_written_with_a_warning(
    config: str, pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "phase", "set", "sub/etl", "load", "--rule", "colour=red") == 0

    assert capsys.readouterr().err == "warning: sub/etl.toml [load]: unknown key: colour\n"


def test_fmt_check_lists_files_that_would_change_and_writes_nothing_then_fmt_fixes_them(
    config: str, pipeline: Path, workflow_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messy = workflow_dir / "messy.toml"
    messy.write_text('[[phase]]\ntask="a"   \nrule = "cron=* * * * *"\n\n\n', encoding="utf-8")
    before = messy.read_bytes()

    assert run(config, "fmt", "--check") == 1
    assert capsys.readouterr().out == "would reformat messy.toml\n"
    assert messy.read_bytes() == before

    assert run(config, "fmt") == 0
    assert capsys.readouterr().out == "formatted messy.toml\n"
    assert messy.read_text(encoding="utf-8") == '[[phase]]\ntask = "a"\nrule = "cron=* * * * *"\n'
    assert pipeline.read_text(encoding="utf-8") == PIPELINE

    assert run(config, "fmt", "--check", "messy", "sub/etl") == 0


def test_fmt_reports_a_broken_file_and_still_formats_the_others(
    config: str, pipeline: Path, workflow_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workflow_dir / "bad.toml").write_text("[[phase]\n", encoding="utf-8")
    pipeline.write_text(PIPELINE.replace('task = "load"', 'task =  "load"'), encoding="utf-8")

    assert run(config, "fmt") == 2

    captured = capsys.readouterr()
    assert captured.err.startswith("error: bad.toml: invalid TOML")
    assert captured.out == "formatted sub/etl.toml\n"
    assert pipeline.read_text(encoding="utf-8") == PIPELINE


def test_a_running_scheduler_sees_an_added_phase_on_its_next_refresh(
    config: str, pipeline: Path, catalog: Catalog
) -> None:
    catalog.refresh()

    assert run(config, "phase", "add", "sub/etl", "--task", "report", "--depends-on", "load") == 0
    result = catalog.refresh()

    assert result.changed == ("sub/etl.toml",)
    report = catalog.get("report", "sub/etl.toml")
    assert report is not None
    assert (report.depends_on, report.status) == ("load", "")


# -- edits stay in the workflow folder --------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str | bytes]:
    """Every entry below ``folder``: a link's target, a file's bytes."""
    return {str(p): os.readlink(p) if p.is_symlink() else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A workflow file outside the workflow folder."""
    path = tmp_path / "elsewhere" / "other.toml"
    path.parent.mkdir()
    path.write_text(PIPELINE.replace('task =', 'task  ='), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("phase", "add", "{config}", "--task", "evil"),
        ("phase", "add", "../tomlflow", "--task", "evil"),
        ("phase", "add", "{outside}", "--task", "evil"),
        ("phase", "add", "sub/../../elsewhere/other", "--task", "evil"),
        ("phase", "add", "link_out", "--task", "evil"),
        ("phase", "add", "linked_dir/other.toml", "--task", "evil"),
        ("phase", "set", "link_out.toml", "extract", "--retry", "5"),
        ("phase", "rm", "{outside}", "load"),
        ("phase", "rm", "link_out", "load"),
        ("fmt", "{outside}"),
        ("fmt", "link_out"),
        ("fmt", "{config}"),
    ],
)
def test_edits_outside_the_workflow_folder_are_refused(
    config: str, pipeline: Path, workflow_dir: Path, outside: Path, tmp_path: Path,
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str],
) -> None:
    (workflow_dir / "link_out.toml").symlink_to(outside)
    (workflow_dir / "linked_dir").symlink_to(outside.parent, target_is_directory=True)
    before = snapshot(tmp_path)
    argv = [a.format(config=config, outside=outside) for a in args]

    assert run(config, *argv) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "outside the workflow folder" in err
    assert snapshot(tmp_path) == before


def test_fmt_of_every_file_refuses_a_link_to_outside_and_formats_the_rest(
    config: str, pipeline: Path, workflow_dir: Path, outside: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (workflow_dir / "link_out.toml").symlink_to(outside)
    pipeline.write_text(PIPELINE.replace('task = "load"', 'task =  "load"'), encoding="utf-8")
    kept = outside.read_bytes()

    assert run(config, "fmt") == 2

    captured = capsys.readouterr()
    assert captured.err == (f"error: {workflow_dir / 'link_out.toml'}: outside the workflow"
                            f" folder {workflow_dir}: not edited\n")
    assert captured.out == "formatted sub/etl.toml\n"
    assert outside.read_bytes() == kept and (workflow_dir / "link_out.toml").is_symlink()
    assert pipeline.read_text(encoding="utf-8") == PIPELINE


def test_workflow_new_refuses_a_sub_folder_linked_to_outside(
    config: str, workflow_dir: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workflow_dir / "linked_dir").symlink_to(outside.parent, target_is_directory=True)

    assert run(config, "workflow", "new", "linked_dir/evil") == 2

    assert "outside the workflow folder" in capsys.readouterr().err
    assert not (outside.parent / "evil.toml").exists()


def test_single_file_mode_edits_only_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workflow = tmp_path / "etl.toml"
    workflow.write_text(PIPELINE, encoding="utf-8")
    config = tmp_path / "tomlflow.toml"
    config.write_text(f'[scheduler]\nworkflows = "etl.toml"\ndatabase = "sqlite:///{tmp_path}/t.db"\n',
                      encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    kept = config.read_bytes()

    assert run(str(config), "phase", "add", "tomlflow", "--task", "evil") == 2
    assert "outside the workflow folder" in capsys.readouterr().err
    assert config.read_bytes() == kept

    assert run(str(config), "phase", "add", "etl", "--task", "report", "--depends-on", "load") == 0
    assert 'task = "report"' in workflow.read_text(encoding="utf-8")

