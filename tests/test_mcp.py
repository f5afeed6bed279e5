"""``tomlflow mcp``: a real server subprocess, called with the ``mcp`` client over stdio."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Finish, LogRow, NewExecution, Status, Trigger
from scheduler.store.workflows import PhaseRow, replace_file

T0 = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Phases load -> report, one failed execution of load with three log lines."""
    (tmp_path / "workflows").mkdir()
    path = tmp_path / "tomlflow.toml"
    path.write_text('[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///t.db"\n')
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    row = NewExecution(task_id="c1", file_path="etl.toml", task="load", task_time=T0,
                       trigger=Trigger.CRON, info="load.sh", meta={}, not_before=T0)
    with db.write() as conn:
        replace_file(conn, "etl.toml", "0" * 32, T0, [
            PhaseRow("etl.toml", "load", "", "cron=0 5 * * *", "load.sh", 2, "", "ok"),
            PhaseRow("etl.toml", "report", "load", "", "report.sh", 0, "", "ok"),
        ], T0)
        history.insert_executions(conn, [row], T0)
        history.record_finishes(conn, [Finish(1, Status.ERROR, "exit 2", 2, T0,
                                              T0 + timedelta(seconds=4))])
        history.insert_logs(conn, [LogRow(1, n, T0, "stderr", f"line {n}") for n in range(3)])
    db.close()
    return path


def call_tools(config: Path, calls: list[tuple[str, dict[str, Any]]]) -> tuple[set[str], list[Any]]:
    """Start ``python -m scheduler mcp``, list its tools, make ``calls``; return both."""
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "scheduler", "mcp", "--config", str(config)])

    async def session() -> tuple[set[str], list[Any]]:
        with anyio.fail_after(60):
            async with Client(params) as client:
                tools = {t.name for t in (await client.list_tools()).tools}
                results = [await client.call_tool(name, args) for name, args in calls]
        return tools, results

    return anyio.run(session)


def text_of(result: Any) -> str:
    [content] = result.content
    return str(content.text)


def test_server_exposes_the_ask_tools_and_answers_from_the_database(config: Path) -> None:
    tools, results = call_tools(config, [
        ("list_executions", {"status": "error"}),
        ("get_execution", {"id": 1, "log_lines": 2}),
        ("task_relationships", {"task": "load", "direction": "children"}),
        ("phase_status", {"task": "load"}),
        ("run_sql", {"sql": "SELECT COUNT(*) AS n FROM executions"}),
    ])
    assert tools == {"list_executions", "get_execution", "phase_status", "task_relationships",
                     "execution_stats", "run_sql"}
    listed, one, related, phase, counted = (json.loads(text_of(r)) for r in results)
    assert [(r["id"], r["msg"]) for r in listed["rows"]] == [(1, "exit 2")]
    assert one["execution"]["exit_code"] == 2
    assert [x["line"] for x in one["log_tail"]] == ["line 1", "line 2"]
    assert one["log_lines_total"] == 3
    assert related == {"children": [{"task": "report", "file_path": "etl.toml"}]}
    assert (phase[0]["last_status"], phase[0]["rule"], phase[0]["retry"]) == (
        "error", "cron=0 5 * * *", 2)
    assert counted == {"columns": ["n"], "rows": [[1]], "truncated": False}


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("run_sql", {"sql": "DELETE FROM executions"}, "readonly"),
        ("get_execution", {"id": 99}, "no execution with id 99"),
        ("list_executions", {"status": "exploded"}, "status: must be one of"),
    ],
)
def test_refusals_are_error_results(config: Path, name: str, arguments: dict[str, Any],
                                    message: str) -> None:
    _tools, [result] = call_tools(config, [(name, arguments)])
    assert result.is_error is True
    assert message in text_of(result)
