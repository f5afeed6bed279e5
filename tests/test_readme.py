"""The README's two set-up commands are the ones the scheduler's users and CI actually run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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
