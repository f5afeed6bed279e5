"""The read-only tools a model may call, shared by ``tomlflow ask`` and ``tomlflow mcp``.

Each tool has a name, a description written for the model, a JSON schema for its input, and a
function over ``scheduler.query``. A tool's result is the JSON of the rows it returned and
nothing else; every list is capped (MAX_PAGE rows, MAX_LOG_LINES log lines), so no call can
carry the whole database out. Bad input is an error result the model can read and correct,
never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler import query
from scheduler.durations import parse_duration
from scheduler.errors import DurationError, TomlflowError
from scheduler.redact import redact
from scheduler.store.history import Status, Trigger
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.tasktime import parse_at

SQL_MAX_ROWS = 200


class ToolInputError(TomlflowError):
    """A tool was called with an argument it cannot use."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


@dataclass(frozen=True)
class ToolResult:
    """What a call returned: ``text`` is JSON; ``rows`` counts the rows in it (for summaries)."""

    text: str
    is_error: bool
    rows: int

    def summary(self) -> str:
        if self.is_error:
            return f"error: {self.text}"
        return f"{self.rows} rows, {len(self.text)} chars"


Handler = Callable[["Toolbox", Mapping[str, Any]], tuple[Any, int]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    handler: Handler


class Toolbox:
    """The tools, bound to one read-only database and a clock (``since: 24h`` needs a now)."""

    def __init__(self, db: ReadOnlyDatabase, now: Callable[[], datetime]) -> None:
        self.db = db
        self.now = now

    def definitions(self) -> list[dict[str, Any]]:
        """Tool definitions in the shape both the Messages API and MCP describe tools."""
        return [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                for t in TOOLS.values()]

    def call(self, name: str, arguments: Mapping[str, Any] | None) -> ToolResult:
        """Run one tool; unknown names, bad input and refused SQL come back as error results."""
        tool = TOOLS.get(name)
        if tool is None:
            return ToolResult(f"unknown tool {name!r}", True, 0)
        try:
            data, rows = tool.handler(self, arguments or {})
        except TomlflowError as exc:
            return ToolResult(redact(str(exc)), True, 0)
        return ToolResult(json.dumps(data, default=str, ensure_ascii=False), False, rows)

    def time_arg(self, args: Mapping[str, Any], key: str) -> datetime | None:
        """A time argument: a duration back from now (``24h``, ``7d``) or a time
        (``2024-01-02``, ``2024-01-02T13:00:00Z``)."""
        text = _str(args, key)
        if text is None:
            return None
        try:
            return self.now() - abs(parse_duration(text))
        except DurationError:
            pass
        try:
            return parse_at(text)
        except ValueError:
            raise ToolInputError(key, f"{text!r} is neither a duration (24h, 7d) nor a time "
                                      "(2024-01-02, 2024-01-02T13:00:00Z)") from None


def _str(args: Mapping[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ToolInputError(key, "must be a string")
    return value


def _required_str(args: Mapping[str, Any], key: str) -> str:
    value = _str(args, key)
    if value is None:
        raise ToolInputError(key, "is required")
    return value


def _int(args: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = args.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ToolInputError(key, "must be a whole number")
    if not low <= value <= high:
        raise ToolInputError(key, f"must be between {low} and {high}")
    return int(value)


def _choice(args: Mapping[str, Any], key: str, choices: list[str]) -> str | None:
    value = _str(args, key)
    if value is not None and value not in choices:
        raise ToolInputError(key, f"must be one of {', '.join(choices)}")
    return value


# -- handlers: each returns (JSON-able data, number of rows in it) -------------------------------


def _list_executions(box: Toolbox, args: Mapping[str, Any]) -> tuple[Any, int]:
    where = query.ExecutionFilter(
        task=_str(args, "task"), file_path=_str(args, "file_path"),
        status=_choice(args, "status", _STATUSES), trigger=_choice(args, "trigger", _TRIGGERS),
        since=box.time_arg(args, "since"), until=box.time_arg(args, "until"),
    )
    page = query.list_executions(box.db, where, _int(args, "limit", 20, 1, query.MAX_PAGE),
                                 _int(args, "offset", 0, 0, 10**9))
    return page.as_dict(), len(page.rows)


def _get_execution(box: Toolbox, args: Mapping[str, Any]) -> tuple[Any, int]:
    if args.get("id") is None:
        raise ToolInputError("id", "is required")
    execution_id = _int(args, "id", 0, 1, 2**63 - 1)
    found = query.get_execution(box.db, execution_id,
                                _int(args, "log_lines", 50, 0, query.MAX_LOG_LINES))
    if found is None:
        raise ToolInputError("id", f"no execution with id {execution_id}")
    return found, 1 + len(found["log_tail"])


def _phase_status(box: Toolbox, args: Mapping[str, Any]) -> tuple[Any, int]:
    rows = query.phase_status(box.db, _str(args, "task"), _str(args, "file_path"))
    return rows, len(rows)


def _relationships(box: Toolbox, args: Mapping[str, Any]) -> tuple[Any, int]:
    direction = _choice(args, "direction", ["children", "parents", "both"]) or "both"
    found = query.relationships(box.db, _required_str(args, "task"), direction)
    return found, sum(len(rows) for rows in found.values())


def _execution_stats(box: Toolbox, args: Mapping[str, Any]) -> tuple[Any, int]:
    rows = query.stats(box.db, box.time_arg(args, "since"), _str(args, "task"),
                       limit=query.MAX_PAGE)
    return rows, len(rows)


def _run_sql(box: Toolbox, args: Mapping[str, Any]) -> tuple[Any, int]:
    result = box.db.run_sql(_required_str(args, "sql"),
                            _int(args, "max_rows", 100, 1, SQL_MAX_ROWS))
    data = {"columns": result.columns, "rows": [list(r) for r in result.rows],
            "truncated": result.truncated}
    return data, len(result.rows)


_STATUSES = [s.value for s in Status]
_TRIGGERS = [t.value for t in Trigger]
_TIME = ("A duration back from now (24h, 7d) or a UTC time (2024-01-02, "
         "2024-01-02T13:00:00Z).")


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_TASK = {"type": "string", "description": "Task as stored: 'topic' or 'topic:job'."}
_FILE = {"type": "string", "description": "Workflow file key, e.g. 'sub/etl.toml'."}

TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("list_executions",
         "List executions (one row per attempt), newest first, with filters and paging. "
         "Returns rows and next_offset (null on the last page). seconds is the run time.",
         _schema({"task": _TASK, "file_path": _FILE,
                  "status": {"type": "string", "enum": _STATUSES},
                  "trigger": {"type": "string", "enum": _TRIGGERS},
                  "since": {"type": "string", "description": "created_at at or after. " + _TIME},
                  "until": {"type": "string", "description": "created_at before. " + _TIME},
                  "limit": {"type": "integer", "minimum": 1, "maximum": query.MAX_PAGE},
                  "offset": {"type": "integer", "minimum": 0}}),
         _list_executions),
    Tool("get_execution",
         "One execution with all its columns (info, meta, msg, exit_code, times, parent) and "
         "the last lines of its output log.",
         _schema({"id": {"type": "integer", "minimum": 1},
                  "log_lines": {"type": "integer", "minimum": 0,
                                "maximum": query.MAX_LOG_LINES}}, ("id",)),
         _get_execution),
    Tool("phase_status",
         "Phases with their definition (rule, template, depends_on, retry), validation status, "
         "paused flag, last execution (id, status, times, msg) and next cron fire. "
         "Without arguments: every phase.",
         _schema({"task": _TASK, "file_path": _FILE}),
         _phase_status),
    Tool("task_relationships",
         "Direct children (phases that depend on the task) and/or parents of a task.",
         _schema({"task": _TASK,
                  "direction": {"type": "string", "enum": ["children", "parents", "both"]}},
                 ("task",)),
         _relationships),
    Tool("execution_stats",
         "Per phase: runs, complete, error, warn, skipped, success_rate (%), avg/p95/max "
         "seconds, last failure. Optionally only executions created since a time.",
         _schema({"since": {"type": "string", "description": _TIME}, "task": _TASK}),
         _execution_stats),
    Tool("run_sql",
         "Run one read-only SQL statement (SQLite or PostgreSQL) on the tomlflow database. "
         "Tables: workflow_files, workflow_phases, phase_state, executions, execution_logs, "
         "alerts, file_reports; views: phase_status, task_relationships, execution_stats. "
         "Timestamps are UTC ISO text 'YYYY-MM-DDTHH:MM:SS.ffffffZ'. Writes are refused. "
         "Rows are capped.",
         _schema({"sql": {"type": "string"},
                  "max_rows": {"type": "integer", "minimum": 1, "maximum": SQL_MAX_ROWS}},
                 ("sql",)),
         _run_sql),
)}
