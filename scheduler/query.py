"""Named read-only questions about pipeline history, shared by ``stats``, ``ask`` and ``mcp``.

Every function reads the public schema (tables and views of docs/SCHEMA.md) through a
``ReadOnlyDatabase`` and returns plain dicts, at most the rows asked for: callers hand these
rows to people or to a model as they are, so a cap here is the cap on what leaves the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.store.phase_stats import FAILED
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.store.views import execution_stats_select
from scheduler.tasktime import iso

MAX_PAGE = 200
MAX_LOG_LINES = 500
MAX_LINE_CHARS = 500


@dataclass(frozen=True)
class ExecutionFilter:
    """Which executions to list; ``since``/``until`` bound ``created_at`` (until exclusive)."""

    task: str | None = None
    file_path: str | None = None
    status: str | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        """The WHERE clause (empty when nothing is filtered) and its parameters."""
        terms, params = [], {}
        for column in ("task", "file_path", "status", "trigger"):
            value = getattr(self, column)
            if value:
                terms.append(f"{column} = :{column}")
                params[column] = value
        if self.since:
            terms.append("created_at >= :since")
            params["since"] = iso(self.since)
        if self.until:
            terms.append("created_at < :until")
            params["until"] = iso(self.until)
        return (" WHERE " + " AND ".join(terms)) if terms else "", params


@dataclass(frozen=True)
class Page:
    """Some rows of a longer list; ``next_offset`` is None on the last page."""

    rows: list[dict[str, Any]]
    offset: int
    next_offset: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "offset": self.offset, "next_offset": self.next_offset}


_LIST_COLUMNS = (
    "id, task_id, file_path, task, task_time, attempt, trigger, status, msg, exit_code, "
    "created_at, started_at, ended_at, parent_execution_id"
)


def list_executions(db: ReadOnlyDatabase, where: ExecutionFilter, limit: int = 50,
                    offset: int = 0) -> Page:
    """Executions matching ``where``, newest first, ``limit`` (at most MAX_PAGE) from ``offset``."""
    limit, offset = _clamp(limit, 1, MAX_PAGE), max(offset, 0)
    clause, params = where.where()
    sql = (f"SELECT {_LIST_COLUMNS}, duration_seconds AS seconds FROM executions"
           f"{clause} ORDER BY id DESC LIMIT :limit OFFSET :offset")
    result = db.query(sql, {**params, "limit": limit + 1, "offset": offset}, max_rows=limit + 1)
    rows = result.as_dicts()
    more = len(rows) > limit
    return Page(rows[:limit], offset, offset + limit if more else None)


def get_execution(db: ReadOnlyDatabase, execution_id: int,
                  log_lines: int = 50) -> dict[str, Any] | None:
    """One execution with every column, its last ``log_lines`` output lines (each cut at
    MAX_LINE_CHARS) and how many lines it logged in all; None when there is no such id."""
    found = db.query("SELECT * FROM executions WHERE id = :id", {"id": execution_id}, 1)
    if not found.rows:
        return None
    execution = found.as_dicts()[0]
    tail = db.query(
        "SELECT seq, ts, stream, line FROM execution_logs WHERE execution_id = :id"
        " ORDER BY seq DESC LIMIT :n",
        {"id": execution_id, "n": _clamp(log_lines, 0, MAX_LOG_LINES)},
        MAX_LOG_LINES,
    ).as_dicts()
    for line in tail:
        line["line"] = _cut(str(line["line"]))
    total = db.query("SELECT COUNT(*) AS n FROM execution_logs WHERE execution_id = :id",
                     {"id": execution_id}, 1).rows[0][0]
    return {"execution": execution, "log_lines_total": total, "log_tail": tail[::-1]}


def phase_status(db: ReadOnlyDatabase, task: str | None = None, file_path: str | None = None,
                 limit: int = MAX_PAGE) -> list[dict[str, Any]]:
    """``phase_status`` rows (definition, validation, paused, last run, next fire)."""
    clause, params = _equals({"task": task, "file_path": file_path})
    sql = f"SELECT * FROM phase_status{clause} ORDER BY file_path, task LIMIT :limit"
    limit = _clamp(limit, 1, MAX_PAGE)
    return db.query(sql, {**params, "limit": limit}, limit).as_dicts()


def relationships(db: ReadOnlyDatabase, task: str,
                  direction: str = "both") -> dict[str, list[dict[str, Any]]]:
    """Direct ``children`` (phases that depend on ``task``) and/or ``parents`` of ``task``."""
    result: dict[str, list[dict[str, Any]]] = {}
    if direction in ("children", "both"):
        result["children"] = db.query(
            "SELECT child_task AS task, file_path FROM task_relationships"
            " WHERE parent_task = :task ORDER BY file_path, child_task", {"task": task}, MAX_PAGE,
        ).as_dicts()
    if direction in ("parents", "both"):
        result["parents"] = db.query(
            "SELECT parent_task AS task, file_path FROM task_relationships"
            " WHERE child_task = :task ORDER BY file_path, parent_task", {"task": task}, MAX_PAGE,
        ).as_dicts()
    return result


def stats(db: ReadOnlyDatabase, since: datetime | None = None, task: str | None = None,
          limit: int = 1000) -> list[dict[str, Any]]:
    """Per-phase counts, success rate, avg/p95/max seconds and last failure; with ``since``,
    over executions created since then only (else the ``execution_stats`` view as it is)."""
    body = execution_stats_select("since" if since else None)
    params: dict[str, Any] = {"since": iso(since)} if since else {}
    task_clause = ""
    if task:
        task_clause, params["task"] = " WHERE task = :task", task
    sql = f"SELECT * FROM ({body}) s{task_clause} ORDER BY file_path, task"
    return db.query(sql, params, limit).as_dicts()


def recent_failures(db: ReadOnlyDatabase, since: datetime | None = None,
                    limit: int = 10) -> list[dict[str, Any]]:
    """The newest failed executions (``error`` or ``alert``), newest first."""
    clause, params = ("AND created_at >= :since", {"since": iso(since)}) if since else ("", {})
    sql = (f"SELECT id, file_path, task, task_time, attempt, status, exit_code, msg, ended_at"
           f" FROM executions WHERE status IN {FAILED} {clause}"
           f" ORDER BY created_at DESC, id DESC LIMIT :limit")
    limit = _clamp(limit, 1, MAX_PAGE)
    return db.query(sql, {**params, "limit": limit}, limit).as_dicts()


def _equals(values: Mapping[str, str | None]) -> tuple[str, dict[str, Any]]:
    present = {k: v for k, v in values.items() if v}
    if not present:
        return "", {}
    return " WHERE " + " AND ".join(f"{k} = :{k}" for k in present), present


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + "…"
