"""``tomlflow ask``: Claude answers a question about pipeline history, using the read-only tools.

The loop is the Messages API's tool use: send the question and the tool definitions; while the
answer stops for tool use, run each requested tool and send back exactly what it returned;
stop at the first answer without tool calls, or after ``max_turns`` requests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from scheduler.ai.tools import Toolbox, ToolResult
from scheduler.errors import TomlflowError
from scheduler.redact import redact
from scheduler.tasktime import iso

log = logging.getLogger(__name__)

API_KEY_VAR = "ANTHROPIC_API_KEY"
MAX_TOKENS = 4096

SYSTEM_PROMPT = """\
You answer questions about the batch pipelines of a tomlflow scheduler. tomlflow loads workflow \
files (TOML, one [[phase]] per task), fires phases on cron rules or when a parent completes, \
retries failures, and records every attempt in the executions table. Use the tools to look at \
the real data before answering; never guess ids, times or messages. Times are UTC. \
"Last night" means the night before the current time. Answer briefly: what happened, the \
evidence (execution ids, times, messages, log lines) and, when you can tell, what to do next. \
The current time is {now}."""


class MessagesClient(Protocol):
    """The part of ``anthropic.Anthropic`` the loop uses (``client.messages.create``)."""

    @property
    def messages(self) -> Any: ...


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model made, for ``--verbose``."""

    name: str
    arguments: Mapping[str, Any]
    result: ToolResult


class NoAnswer(TomlflowError):
    """The model did not produce a final answer within the turn limit."""

    def __init__(self, max_turns: int) -> None:
        self.max_turns = max_turns
        super().__init__(f"no answer after {max_turns} turns ([ai] max_turns); ask more narrowly")


def api_key(env: Mapping[str, str] | None = None) -> str:
    """The API key from the environment; raises TomlflowError with what to do when unset."""
    key = (os.environ if env is None else env).get(API_KEY_VAR, "").strip()
    if not key:
        raise TomlflowError(f"{API_KEY_VAR} is not set: export it to use `tomlflow ask`")
    return key


def make_client(key: str) -> MessagesClient:
    """A real client; it reads ANTHROPIC_BASE_URL itself, which points it elsewhere."""
    import anthropic  # imported here so that commands other than `ask` never pay for it

    return anthropic.Anthropic(api_key=key, max_retries=2, timeout=120.0)


def ask(question: str, toolbox: Toolbox, client: MessagesClient, *, model: str, max_turns: int,
        now: datetime, on_call: Callable[[ToolCall], None] | None = None) -> str:
    """Run the tool-use loop and return Claude's final text.

    Raises NoAnswer after ``max_turns`` requests without a final answer, and TomlflowError
    when the API refuses a request.
    """
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    for _turn in range(max_turns):
        response = _create(client, model, now, toolbox, messages)
        messages.append({"role": "assistant", "content": _echo(response.content)})
        calls = [b for b in response.content if b.type == "tool_use"]
        if response.stop_reason != "tool_use" or not calls:
            return _text(response.content)
        messages.append({"role": "user", "content": [_run(toolbox, b, on_call) for b in calls]})
    raise NoAnswer(max_turns)


def _create(client: MessagesClient, model: str, now: datetime, toolbox: Toolbox,
            messages: list[dict[str, Any]]) -> Any:
    import anthropic

    try:
        return client.messages.create(
            model=model, max_tokens=MAX_TOKENS, system=SYSTEM_PROMPT.format(now=iso(now)),
            tools=toolbox.definitions(), messages=messages,
        )
    except anthropic.APIStatusError as exc:
        raise TomlflowError(f"Claude API refused the request ({exc.status_code}): "
                            f"{_first_line(exc.message)}") from None
    except anthropic.APIError as exc:
        raise TomlflowError(f"Claude API unreachable: {_first_line(exc.message)}") from None


def _run(toolbox: Toolbox, block: Any,
         on_call: Callable[[ToolCall], None] | None) -> dict[str, Any]:
    arguments = block.input if isinstance(block.input, dict) else {}
    result = toolbox.call(block.name, arguments)
    log.debug("tool %s(%s): %s", block.name, arguments, result.summary())
    if on_call is not None:
        on_call(ToolCall(block.name, arguments, result))
    return {"type": "tool_result", "tool_use_id": block.id, "content": result.text,
            "is_error": result.is_error}


def _echo(content: list[Any]) -> list[dict[str, Any]]:
    """The assistant's turn sent back as it came: its text and tool_use blocks."""
    blocks: list[dict[str, Any]] = []
    for block in content:
        if block.type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name,
                           "input": block.input})
    return blocks


def _text(content: list[Any]) -> str:
    return "\n".join(b.text for b in content if b.type == "text").strip()


def _first_line(text: str) -> str:
    """The first line of an API error, without credentials (a proxy URL may carry some)."""
    lines = str(text).strip().splitlines()
    return redact(lines[0]) if lines else ""
