"""The README's two set-up commands are the ones the scheduler's users and CI actually run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    """The first two ```sh blocks under "## Set up", one command line each."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [block.strip() for block in blocks[:2]]


def test_readme_has_two_one_line_setup_commands() -> None:
    commands = setup_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)


def test_first_command_runs_the_scheduler_with_no_config() -> None:
    # given the first command, then it installs and runs `tomlflow run` on the defaults
    run = setup_commands()[0]
    words = shlex.split(run)
    assert words[:2] == ["pip", "install"]
    assert run.endswith("tomlflow run")
    assert "--config" not in words
    assert (REPO / "workflows").is_dir()  # the default workflow folder it runs on


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = setup_commands()[1]
    assert "pytest" in test_command
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def section(name: str) -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_lists_every_command() -> None:
    from scheduler.cli import COMMAND_TABLE

    listed = section("Commands")
    missing = [name for name in COMMAND_TABLE if f"`tomlflow {name}" not in listed]
    assert missing == []


def test_the_end_to_end_example_prints_what_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a fresh copy of the bundled workflows, no config, and the example's demo folder here
    from scheduler.cli import main

    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOMLFLOW_CONFIG", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    text = (REPO / "README.md").read_text(encoding="utf-8").split(
        "The bundled pipeline runs end to end with:", 1)[1]
    commands, expected = re.findall(r"```(?:sh|text)\n(.*?)```", text, re.DOTALL)[:2]
    # when each command of the example runs, then each succeeds
    for line in commands.strip().splitlines():
        for command in line.split("&&"):
            words = shlex.split(command)
            assert words[0] == "tomlflow"
            capsys.readouterr()
            assert main(words[1:]) == 0, command
    # and the query prints the table shown, and the last log line is the one quoted
    printed = [line.split() for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == [line.split() for line in expected.strip().splitlines()]
    promised = re.search(r"`tomlflow logs (\d+)` ends with `(.*?)`", text)
    assert promised is not None
    assert main(["logs", promised.group(1)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == promised.group(2)


def test_the_completion_script_generates() -> None:
    # given the variable the README's completion section sets, then tomlflow prints a script
    assert "_TOMLFLOW_COMPLETE=bash_source tomlflow" in section("Shell completion")
    env = {**os.environ, "PYTHONPATH": str(REPO), "_TOMLFLOW_COMPLETE": "bash_source"}
    script = subprocess.run([sys.executable, "-m", "scheduler"], env=env, capture_output=True,
                            text=True, check=True).stdout
    assert "_tomlflow_completion()" in script
    assert "complete -o nosort -F _tomlflow_completion tomlflow" in script
    # and completing "sta" offers the two commands it starts
    env.update(_TOMLFLOW_COMPLETE="bash_complete", COMP_WORDS="tomlflow sta", COMP_CWORD="1")
    offered = subprocess.run([sys.executable, "-m", "scheduler"], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
    assert offered == ["plain,stats", "plain,status"]


def test_schema_doc_counts_its_sqlite_examples_right() -> None:
    # "The first N are SQLite": N is the number of examples before the first PostgreSQL one
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
             "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen", "nineteen", "twenty"]
    doc = (REPO / "docs" / "SCHEMA.md").read_text(encoding="utf-8")
    examples = doc.split("\n## Example queries\n", 1)[1].split("\n## ", 1)[0]
    claim = re.search(r"The first (\w+) are SQLite", examples)
    assert claim is not None
    titles = re.findall(r"^\*\*(.+?)\*\*(.*)$", examples, re.MULTILINE)
    sqlite = 0
    for _title, rest in titles:
        if "(PostgreSQL)" in rest:
            break
        sqlite += 1
    assert words.index(claim.group(1)) == sqlite
