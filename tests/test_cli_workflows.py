"""The workflow commands, run through ``scheduler.cli.main`` as a user would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scheduler.cli import main

REPO = Path(__file__).resolve().parent.parent

BROKEN = """
[[phase]]
task = "good"
rule = "cron=0 5 * * *"
template = "echo good"

[[phase]]
task = "lost"
depends_on = "nobody"
template = "echo lost"

[[phase]]
task = "odd"
rule = "cron=@daily&colour=red"
template = "echo odd"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding a copy of the bundled workflows/ and no config file."""
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOMLFLOW_CONFIG", raising=False)
    return tmp_path


def test_validate_bundled_workflows_is_clean(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given the bundled folder and no config, when validated, then exit 0 and no problems
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "0 errors, 0 warnings" in out
    assert (project / "tomlflow.db").is_file()  # the default database, in the working dir


def test_validate_reports_file_and_task_and_fails(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a workflow with a missing parent (error) and an unknown rule key (warning)
    (project / "workflows" / "sub").mkdir()
    (project / "workflows" / "sub" / "broken.toml").write_text(BROKEN)
    # when validated, then exit 1 and each problem names its file and task
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "sub/broken.toml [lost]: parent task not found: nobody" in out
    assert "sub/broken.toml [odd]: unknown key: colour" in out
    assert "[good]" not in out
    assert "1 errors, 1 warnings" in out


def test_validate_reports_a_file_that_does_not_parse(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "workflows" / "bad.toml").write_text("[[phase]\n")
    assert main(["validate"]) == 1
    assert "bad.toml: invalid TOML" in capsys.readouterr().out


def test_validate_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "workflows" / "broken.toml").write_text(BROKEN)
    assert main(["validate", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert {(p["file_path"], p["task"], p["severity"]) for p in data["phases"]} == {
        ("broken.toml", "lost", "error"),
        ("broken.toml", "odd", "warning"),
    }


def test_refresh_prints_changed_keys(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # first refresh loads the bundled file
    assert main(["refresh"]) == 0
    assert capsys.readouterr().out.split() == ["orders.toml"]
    # nothing changed
    assert main(["refresh"]) == 0
    assert capsys.readouterr().out.strip() == "no changes"
    # one added, one removed
    (project / "workflows" / "new.toml").write_text(
        '[[phase]]\ntask = "n"\nrule = "cron=@daily"\ntemplate = "true"\n'
    )
    (project / "workflows" / "orders.toml").unlink()
    assert main(["refresh", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "changed": ["new.toml", "-orders.toml"],
        "errors": {},
        "phase_errors": [],
    }


def test_phases_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["refresh"]) == 0
    capsys.readouterr()
    assert main(["phases", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["broken_files"] == []
    rows = data["phases"]
    assert [(r["task"], r["depends_on"], r["status"]) for r in rows] == [
        ("extract:orders", "", ""),
        ("publish", "transform", ""),
        ("report", "transform", ""),
        ("transform", "extract", ""),
    ]
    assert {r["file_path"] for r in rows} == {"orders.toml"}
    assert rows[3]["retry"] == 2


def test_phases_table(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["refresh"]) == 0
    assert main(["phases"]) == 0
    out = capsys.readouterr().out
    assert "extract:orders" in out and "transform" in out and "ok" in out


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("dot", '"orders.toml/extract:orders" -> "orders.toml/transform";'),
        ("mermaid", "n0 --> n3"),
        ("text", "  └─ extract:orders\n    └─ transform\n      └─ publish\n      └─ report"),
    ],
)
def test_graph_formats(
    project: Path, capsys: pytest.CaptureFixture[str], fmt: str, expected: str
) -> None:
    assert main(["graph", "--format", fmt]) == 0
    assert expected in capsys.readouterr().out


def test_graph_bad_format_is_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", "--format", "png"]) == 2
    assert "png" in capsys.readouterr().err


def test_init_creates_a_project_that_validates_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TOMLFLOW_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "new"
    # when init runs in an empty folder, then it writes config, example and database
    assert main(["init", str(target)]) == 0
    assert (target / "tomlflow.toml").is_file()
    assert (target / "workflows" / "example.toml").is_file()
    assert (target / "tomlflow.db").is_file()
    capsys.readouterr()
    # and the new project validates clean
    assert main(["validate", "--config", str(target / "tomlflow.toml")]) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out
    # and a second init keeps what is there
    (target / "workflows" / "example.toml").write_text("# mine\n")
    assert main(["init", str(target)]) == 0
    assert "kept" in capsys.readouterr().out
    assert (target / "workflows" / "example.toml").read_text() == "# mine\n"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[schedular]\n", "schedular: unknown key"),
        ("[scheduler]\nrefresh = 'soon'\n", "scheduler.refresh: invalid duration"),
        ("[scheduler\n", "invalid TOML"),
        ("[scheduler]\nworkflows = 'missing'\n", "no such file or folder"),
        ("[scheduler]\ndatabase = 'nosuch://x'\n", "cannot use this URL"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "refresh", "phases", "graph"])
def test_bad_config_is_one_line_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], command: str, config: str, message: str
) -> None:
    (project / "bad.toml").write_text(config)
    assert main([command, "--config", "bad.toml"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_missing_config_file_is_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", "nope.toml"]) == 2
    assert capsys.readouterr().err.strip() == "error: nope.toml: no such file"


@pytest.mark.parametrize(
    "argv",
    [["validate", "--bogus"], ["--bogus"], ["nosuchcommand"], ["graph", "--format"]],
)
def test_bad_usage_is_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "Traceback" not in err


def test_help_is_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("init", "validate", "refresh", "phases", "graph"):
        assert command in out


def test_validate_says_a_phase_has_no_command_and_a_worker_fixes_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a typo that leaves a phase with no template ("templat") and no [workers] command
    (project / "workflows" / "typo.toml").write_text(
        '[[phase]]\ntask = "t"\nrule = "cron=@daily"\ntemplat = "echo"\n'
    )
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "typo.toml [t]: no command: set template or a [workers] command" in out
    # when the configuration gives the topic a worker command, then the same file is clean
    (project / "tomlflow.toml").write_text('[workers."t"]\ncommand = "run {info}"\n')
    assert main(["validate"]) == 0


def test_init_config_points_to_docs_the_source_distribution_carries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a new project, then its config names the reference pages without a repository path
    monkeypatch.delenv("TOMLFLOW_CONFIG", raising=False)
    assert main(["init", str(tmp_path / "new")]) == 0
    config = (tmp_path / "new" / "tomlflow.toml").read_text()
    assert "docs/WORKFLOWS.md" in config and "config.example.toml" in config
    assert "tomlflow --help" in config
    # and the source distribution carries both
    manifest = (REPO / "MANIFEST.in").read_text().splitlines()
    assert "include config.example.toml" in manifest
    assert "recursive-include docs *.md" in manifest


def test_init_json_lists_what_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TOMLFLOW_CONFIG", raising=False)
    target = tmp_path / "new"
    assert main(["init", str(target), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "created": [str(target / "tomlflow.toml"), str(target / "workflows" / "example.toml")],
        "kept": [],
        "database": str(target / "tomlflow.db"),
    }


def test_a_database_url_is_printed_without_its_password() -> None:
    from scheduler.store.db import where

    shown = where("postgresql+psycopg://etl:s3cret@db.example:5432/tomlflow")
    assert "s3cret" not in shown and "etl:***@db.example" in shown


def test_validate_names_a_phase_without_task_by_its_file_and_position(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "workflows" / "w.toml").write_text(
        '[[phase]]\ntask = "a"\nrule = "cron=@daily"\ntemplate = "echo"\n\n'
        '[[phase]]\ntask = "b"\ndepends_on = "a"\ntemplate = "echo"\n\n'
        '[[phase]]\nrule = "cron=@daily"\ntemplate = "echo"\n'
    )
    assert main(["validate"]) == 1
    assert "w.toml phase 3: missing key: task" in capsys.readouterr().out
