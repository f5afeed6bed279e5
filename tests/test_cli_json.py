"""--json on the commands that print data and did not take it: pause, resume, ask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.cli import main
from tests.conftest import make_site
from tests.test_ask import LIST_THEN_ANSWER, FakeClaude, claude, project

__all__ = ["claude", "project"]  # fixtures shared with test_ask

CRON = '[[phase]]\ntask = "load"\nrule = "cron=0 * * * *"\ntemplate = "echo load"\n'


def test_pause_and_resume_print_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_site(tmp_path, {"p.toml": CRON}, monkeypatch=monkeypatch)
    assert main(["pause", "load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "file_path": "p.toml", "task": "load", "paused": True, "changed": True
    }
    assert main(["pause", "load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False
    assert main(["resume", "load", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "file_path": "p.toml", "task": "load", "paused": False, "changed": True
    }


@pytest.mark.parametrize("claude", [LIST_THEN_ANSWER], indirect=True)
def test_ask_prints_json(
    project: Path, claude: FakeClaude, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "what failed?", "--json", "--config", str(project)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["question"] == "what failed?"
    assert data["answer"] and isinstance(data["answer"], str)
