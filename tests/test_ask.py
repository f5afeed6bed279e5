"""``tomlflow ask``: the real anthropic client against a local server that plays back Claude.

The server listens on 127.0.0.1 only, answers POST /v1/messages with scripted Messages API
responses, and keeps every request body, so the test can check exactly what was sent back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli import main
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Finish, NewExecution, Status, Trigger

T0 = datetime(2024, 1, 2, 3, 0, tzinfo=UTC)


def message(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": "claude-test",
            "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10}}


def tool_use(name: str, arguments: dict[str, Any], use_id: str = "toolu_1") -> dict[str, Any]:
    return message([{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": use_id, "name": name, "input": arguments}],
                   "tool_use")


def final(text: str) -> dict[str, Any]:
    return message([{"type": "text", "text": text}], "end_turn")


class FakeClaude:
    """A Messages API on 127.0.0.1 that replies from a script (the last reply repeats)."""

    def __init__(self, script: list[dict[str, Any]]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append({"path": self.path, "body": json.loads(body),
                                      "auth": f"{self.headers.get('x-api-key')} "
                                              f"{self.headers.get('authorization')}"})
                reply = fake.script[min(len(fake.requests), len(fake.script)) - 1]
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeClaude:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config (model claude-test, 3 turns) and a database with two executions of load."""
    (tmp_path / "workflows").mkdir()
    config = tmp_path / "tomlflow.toml"
    config.write_text('[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///t.db"\n'
                      '[ai]\nmodel = "claude-test"\nmax_turns = 3\n')
    db = Database(f"sqlite:///{tmp_path / 't.db'}")
    for n, (status, msg) in enumerate([(Status.COMPLETE, ""), (Status.ERROR, "exit 1: no file")]):
        at = T0 + timedelta(days=n)
        row = NewExecution(task_id=f"c{n}", file_path="etl.toml", task="data-load", task_time=at,
                           trigger=Trigger.CRON, info="load.sh", meta={}, not_before=at)
        with db.write() as conn:
            history.insert_executions(conn, [row], at)
            history.record_finishes(conn, [Finish(n + 1, status, msg, 1 if n else 0, at,
                                                  at + timedelta(seconds=5))])
    db.close()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    for var in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(var, raising=False)
    return config


@pytest.fixture
def claude(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClaude]:
    with FakeClaude(request.param) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        yield fake


LIST_THEN_ANSWER = [
    tool_use("list_executions", {"task": "data-load", "status": "error"}),
    final("data-load failed: exit 1: no file (execution 2)."),
]


@pytest.mark.parametrize("claude", [LIST_THEN_ANSWER], indirect=True)
def test_tool_rows_from_the_database_go_back_in_the_next_request(
    project: Path, claude: FakeClaude, capsys: pytest.CaptureFixture[str]
) -> None:
    # when
    code = main(["ask", "why did data-load fail last night?", "--config", str(project)])
    # then the answer is printed
    assert code == 0
    assert capsys.readouterr().out.strip() == "data-load failed: exit 1: no file (execution 2)."
    # and the first request carried the question, the model, the key and the tools
    first, second = (r["body"] for r in claude.requests)
    assert [r["path"] for r in claude.requests] == ["/v1/messages", "/v1/messages"]
    assert "test-key" in claude.requests[0]["auth"]  # x-api-key or a bearer, by SDK version
    assert first["model"] == "claude-test"
    assert first["messages"] == [{"role": "user",
                                  "content": "why did data-load fail last night?"}]
    assert {t["name"] for t in first["tools"]} >= {
        "list_executions", "get_execution", "phase_status", "task_relationships", "run_sql"}
    # and the second request echoes the tool call and returns exactly the rows it found
    assert second["messages"][1]["content"][1]["type"] == "tool_use"
    [result] = second["messages"][2]["content"]
    assert (result["type"], result["tool_use_id"], result["is_error"]) == (
        "tool_result", "toolu_1", False)
    page = json.loads(result["content"])
    assert page["next_offset"] is None
    [row] = page["rows"]
    assert (row["id"], row["task"], row["status"], row["msg"], row["exit_code"]) == (
        2, "data-load", "error", "exit 1: no file", 1)
    assert row["seconds"] == pytest.approx(5, abs=1e-3)


@pytest.mark.parametrize("claude", [[
    tool_use("run_sql", {"sql": "DELETE FROM executions"}),
    final("I cannot change anything."),
]], indirect=True)
def test_a_write_through_run_sql_comes_back_as_an_error_result(
    project: Path, claude: FakeClaude, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ask", "delete everything", "--config", str(project)]) == 0
    [result] = claude.requests[1]["body"]["messages"][2]["content"]
    assert result["is_error"] is True
    assert "readonly" in result["content"]
    capsys.readouterr()
    assert main(["sql", "SELECT COUNT(*) AS n FROM executions", "--json",
                 "--config", str(project)]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]


@pytest.mark.parametrize("claude", [[tool_use("phase_status", {})]], indirect=True)
def test_the_loop_stops_after_max_turns(project: Path, claude: FakeClaude,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "loop forever", "--config", str(project)]) == 2
    assert len(claude.requests) == 3
    assert "no answer after 3 turns" in capsys.readouterr().err


@pytest.mark.parametrize("claude", [LIST_THEN_ANSWER], indirect=True)
def test_verbose_shows_each_tool_call_on_stderr(project: Path, claude: FakeClaude,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "what failed?", "--verbose", "--config", str(project)]) == 0
    err = capsys.readouterr().err
    assert "list_executions(task='data-load', status='error')" in err
    assert "1 rows" in err


def test_without_an_api_key_exit_2_with_a_clear_message(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert main(["ask", "anything", "--config", str(project)]) == 2
    assert "ANTHROPIC_API_KEY is not set" in capsys.readouterr().err
