"""``render TASK`` and ``test TASK``: show or run one phase as a trigger would; record nothing."""

from __future__ import annotations

import json
import select as fdselect
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from scheduler.cli import main
from scheduler.store.db import Database
from scheduler.store.schema import executions
from tests.conftest import SITE_DATABASE, make_site

PY = sys.executable

EMIT = (
    "import json, os, sys; print('working on', sys.argv[1]); "
    "print('__WF_EVENT__:' + json.dumps({'meta': {'rows': '42'}, 'msg': 'all good'}))"
)

WORKFLOW = f"""
[[phase]]
task = "load:daily"
rule = "cron=0 5 * * *&offset=-24h"
template = "{PY} -c \\"{EMIT}\\" {{yyyy}}-{{mm}}-{{dd}}/{{meta:region}}"

[[phase]]
task = "broken"
rule = "cron=0 5 * * *"
template = "{PY} -c \\"import sys; print('oops', file=sys.stderr); sys.exit(3)\\""

[[phase]]
task = "slow"
rule = "cron=0 5 * * *&timeout=300ms"
template = "sleep 30"

[[phase]]
task = "lost"
depends_on = "nobody"
template = "echo never"
"""

WORKER = """
[workers."load"]
command = "env-runner --go {info}"
env = { REGION_DEFAULT = "eu" }
timeout = "2m"
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_site(tmp_path, {"w.toml": WORKFLOW}, monkeypatch=monkeypatch)


def test_render_prints_the_argument_list_and_environment(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "load:daily", "--at", "2024-01-02", "--meta", "region=north"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# load:daily for 2024-01-02T00:00:00+00:00"
    assert shlex.split(out[1]) == [PY, "-c", EMIT, "2024-01-02/north"]
    env = dict(line.split("=", 1) for line in out[2:])
    assert env["TOMLFLOW_TASK_TIME"] == "2024-01-02T00:00:00+00:00"
    assert env["TOMLFLOW_EXECUTION_ID"] == "0"
    assert json.loads(shlex.split(env["TOMLFLOW_META"])[0]) == {
        "job": "daily", "region": "north", "workflow": "w.toml"
    }
    # nothing was recorded: no database was even created
    assert not (site / SITE_DATABASE).exists()


def test_render_shows_a_worker_command_its_env_and_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_site(tmp_path, {"w.toml": WORKFLOW}, WORKER, monkeypatch)
    assert main(["render", "load:daily", "--at", "2024-01-02", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert item["argv"][:2] == ["env-runner", "--go"]
    assert item["argv"][2].endswith("2024-01-02/")  # {info}: the rendered template, one argument
    assert len(item["argv"]) == 3
    assert item["env"]["REGION_DEFAULT"] == "eu"
    assert item["timeout"] == "0:02:00"


def test_test_runs_the_phase_and_prints_result_msg_and_meta(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Database(f"sqlite:///{site / SITE_DATABASE}").close()
    assert main(["test", "load:daily", "--at", "2024-01-02", "--meta", "region=north"]) == 0
    out = capsys.readouterr().out
    assert "working on 2024-01-02/north" in out
    assert "result: complete" in out
    assert "msg: all good" in out
    assert 'meta: {"rows": "42"}' in out
    with Database(f"sqlite:///{site / SITE_DATABASE}").read() as conn:
        assert conn.scalar(select(func.count()).select_from(executions)) == 0


def test_test_exits_1_when_the_phase_fails(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "broken"]) == 1
    captured = capsys.readouterr()
    assert "oops" in captured.err
    assert "result: error" in captured.out and "exit code 3: oops" in captured.out


def test_test_applies_the_phase_timeout(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "slow", "--json"]) == 1
    [outcome] = json.loads(capsys.readouterr().out)
    assert outcome["result"] == "error" and "timeout after 300ms" in outcome["msg"]


@pytest.mark.parametrize("command", ["render", "test"])
def test_a_phase_with_errors_is_refused(
    site: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "lost"]) == 2
    assert "w.toml [lost]: phase has errors: parent task not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["render", "test"])
def test_an_unknown_task_is_exit_2(
    site: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "nosuch"]) == 2
    assert "no phase with task 'nosuch'" in capsys.readouterr().err


def test_test_streams_output_while_the_phase_runs(tmp_path: Path) -> None:
    # given a phase that prints a line, then waits for a file the test makes only after reading it
    gate = tmp_path / "gate"
    waits = (
        '[[phase]]\ntask = "waits"\nrule = "manual"\n'
        f"template = \"sh -c 'echo first; while [ ! -e {gate} ]; do sleep 0.05; done; "
        "echo last'\"\n"
    )
    site = make_site(tmp_path, {"w.toml": waits})
    proc = subprocess.Popen(
        [PY, "-m", "scheduler", "test", "waits", "--config", str(site / "tomlflow.toml")],
        cwd=site, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # when its first line is read, then it came while the phase still ran (else: no line,
        # the phase waits for ever, and the read below times out)
        ready, _, _ = fdselect.select([proc.stdout], [], [], 60)
        assert ready and proc.stdout is not None
        assert proc.stdout.readline().strip() == "first"
        assert proc.poll() is None
        gate.touch()
        out, _ = proc.communicate(timeout=60)
    finally:
        gate.touch()  # whatever failed, the phase (in a session of its own) ends
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert out.splitlines()[0] == "last" and "result: complete" in out
