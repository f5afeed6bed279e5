"""The JSON API under ``/api/``, and flowlord's endpoints (``/info``, ``/refresh``,
``/backload``, ``/task/{id}``) so its users' scripts keep working.

Reads take the same filters as the pages; POSTs take JSON (or a form) and do what the buttons
do. Errors are ``{"error": "..."}`` with 400 (bad input), 404 (no such thing) or 409 (refused,
e.g. a retry while an attempt is active); never a stack trace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scheduler import backfill
from scheduler.errors import TaskNotFound
from scheduler.graph import topic_of
from scheduler.store import browse, history
from scheduler.store.history import FINISHED, Execution
from scheduler.store.workflows import phase_rows
from scheduler.tasktime import iso
from scheduler.web import actions, ops, phases, runs
from scheduler.web.context import ctx
from scheduler.web.render import (
    BadRequest,
    after_arg,
    int_arg,
    text_arg,
    time_arg,
    tomlflow_version,
)

MAX_BODY = 1024 * 1024
PREVIEW_TASKS = 1000


async def body_of(request: Request) -> dict[str, Any]:
    """The request's JSON object, or its form fields; 400 when neither."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise BadRequest("body too large")
        try:
            data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        return {str(k).lower(): v for k, v in data.items()}
    return {k: str(v) for k, v in (await request.form()).items()}


def _text(data: Mapping[str, Any], name: str) -> dict[str, str]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, str | int):
        raise BadRequest(f"{name}: must be a string")
    return {name: str(value)}


def _flag(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name, False)
    return value is True or str(value).lower() in ("1", "true", "on", "yes")


def run_json(e: Execution) -> dict[str, Any]:
    return e.as_dict()


# -- reads ---------------------------------------------------------------------------------------


def api_phases(request: Request) -> Response:
    context = ctx(request)
    params = request.query_params
    limit = int_arg(params, "limit", 200, 1, 5000) or 200
    offset = int_arg(params, "offset", 0) or 0
    with context.db.read() as conn:
        rows = browse.phase_status_rows(conn, text_arg(params, "file"), limit, offset)
    return JSONResponse({"phases": rows, "offset": offset, "limit": limit})


def api_runs(request: Request) -> Response:
    found, total = runs.run_page(ctx(request), request.query_params)
    return JSONResponse(
        {
            "runs": [run_json(e) for e in found.rows],
            "older": found.older,
            "newer": found.newer,
            "count": min(total, browse.COUNT_CAP),
            "count_capped": total > browse.COUNT_CAP,
        }
    )


def api_run(request: Request) -> Response:
    context = ctx(request)
    with context.db.read() as conn:
        execution = history.get_execution(conn, request.path_params["id"])
        if execution is None:
            raise BadRequest(f"no execution with id {request.path_params['id']}", 404)
        attempts = browse.attempts_of(conn, execution)
        children = browse.children_of(conn, execution.id)
        lines = browse.log_count(conn, execution.id)
    return JSONResponse(
        {
            "run": run_json(execution),
            "attempts": [a.id for a in attempts],
            "children": [c.id for c in children],
            "log_lines": lines,
        }
    )


def api_logs(request: Request) -> Response:
    context = ctx(request)
    after = after_arg(request.query_params)
    limit = int_arg(request.query_params, "limit", 1000, 1, 5000) or 1000
    with context.db.read() as conn:
        execution = history.get_execution(conn, request.path_params["id"])
        if execution is None:
            raise BadRequest(f"no execution with id {request.path_params['id']}", 404)
        lines = browse.log_lines(conn, execution.id, after_seq=after, limit=limit)
    return JSONResponse(
        {
            "status": execution.status.value,
            "finished": execution.status in FINISHED,
            "lines": [
                {"seq": x.seq, "ts": iso(x.ts), "stream": x.stream, "line": x.line} for x in lines
            ],
            "last_seq": lines[-1].seq if lines else after,
        }
    )


def api_log_search(request: Request) -> Response:
    """``GET /api/logs?q=WORDS[&task=&since=&until=&limit=]``: matching lines, newest first."""
    _, hits = ops.search_logs(ctx(request), request.query_params)
    return JSONResponse({"hits": [hit.as_dict() for hit in hits]})


def api_next(request: Request) -> Response:
    """The next ``n`` cron fires of each runnable cron phase (or of ``task``)."""
    context = ctx(request)
    params = request.query_params
    n = int_arg(params, "n", 1, 1, 50) or 1
    task = text_arg(params, "task")
    now = context.clock.now()
    with context.db.read() as conn:
        states = history.phase_states(conn)
        rows = [] if task else [r for r in phase_rows(conn) if "cron" in r.rule]
    if task:
        specs = [actions.find_spec(context, task, text_arg(params, "file"))]
    else:  # only rules that can hold a cron are parsed: a few of a thousand phases
        specs = [s for s in map(context.spec, rows) if s.rule and s.rule.cron]
    result = []
    for spec in specs:
        state = states.get((spec.file_path, spec.task))
        fires = phases.next_fires(spec, state, context.config.timezone, now, n)
        result.append(
            {
                "file_path": spec.file_path,
                "task": spec.task,
                "paused": bool(state and state.paused),
                "next": [iso(f.scheduled) for f in fires],
                "late": [iso(f.scheduled) for f in fires if f.late],
            }
        )
    return JSONResponse({"phases": result})


# -- actions -------------------------------------------------------------------------------------


async def api_trigger(request: Request) -> Response:
    data = await body_of(request)
    context = ctx(request)
    fields = {**_text(data, "task"), **_text(data, "file"), **_text(data, "at")}
    spec = await run_in_threadpool(
        actions.find_spec, context, fields.get("task", ""), fields.get("file")
    )
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise BadRequest("meta: must be an object of strings")
    queued = await run_in_threadpool(
        actions.trigger,
        context,
        spec,
        time_arg(fields, "at"),
        {str(k): str(v) for k, v in meta.items()},
    )
    return JSONResponse({"queued": [run_json(e) for e in queued]}, status_code=201)


async def api_retry(request: Request) -> Response:
    data = await body_of(request)
    execution_id = int_arg(_text(data, "id"), "id")
    if execution_id is None:
        raise BadRequest("id: required")
    rerun = await run_in_threadpool(
        actions.retry, ctx(request), execution_id, _flag(data, "downstream")
    )
    return JSONResponse(
        {
            "execution_id": rerun.execution_id,
            "attempt": rerun.attempt,
            "retry_of": execution_id,
            "cancelled": list(rerun.cancelled),
        },
        status_code=201,
    )


async def api_mark(request: Request) -> Response:
    data = await body_of(request)
    fields = {**_text(data, "id"), **_text(data, "result"), **_text(data, "msg")}
    execution_id, result = runs.mark_args(fields)
    marked = await run_in_threadpool(
        actions.mark, ctx(request), execution_id, result, fields.get("msg", ""), runs.who(request)
    )
    return JSONResponse(
        {
            "execution_id": execution_id,
            "status": result.value,
            "was": marked.before.status.value,
            "changed": marked.changed,
            "released": marked.released,
        }
    )


async def api_cancel(request: Request) -> Response:
    data = await body_of(request)
    execution_id = int_arg(_text(data, "id"), "id")
    if execution_id is None:
        raise BadRequest("id: required")
    outcome, execution = await run_in_threadpool(
        actions.cancel, ctx(request), execution_id, runs.who(request)
    )
    return JSONResponse(
        {"execution_id": execution_id, "task": execution.task, "cancel": outcome.value}
    )


async def api_pause(request: Request) -> Response:
    data = await body_of(request)
    context = ctx(request)
    fields = {**_text(data, "task"), **_text(data, "file")}
    spec = await run_in_threadpool(
        actions.find_spec, context, fields.get("task", ""), fields.get("file")
    )
    paused = request.url.path.endswith("/pause")
    changed = await run_in_threadpool(actions.set_paused, context, spec, paused)
    return JSONResponse(
        {"file_path": spec.file_path, "task": spec.task, "paused": paused, "changed": changed}
    )


def _backfill_fields(data: Mapping[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in ("task", "file", "from", "to", "at", "by", "meta_file"):
        fields.update(_text(data, name))
    meta = data.get("meta")
    if isinstance(meta, dict):  # flowlord's {"key": "v"} or {"key": ["v1", "v2"]}
        lines = []
        for key, value in meta.items():
            values = value if isinstance(value, list) else [value]
            lines.append(f"{key}={','.join(str(v) for v in values)}")
        fields["meta"] = "\n".join(lines)
    elif isinstance(meta, list):
        fields["meta"] = "\n".join(str(item) for item in meta)
    elif isinstance(meta, str):
        fields["meta"] = meta
    return fields



async def api_backfill(request: Request) -> Response:
    data = await body_of(request)
    context = ctx(request)
    fields = _backfill_fields(data)
    req = await run_in_threadpool(ops.backfill_request, context, fields)
    result = await run_in_threadpool(actions.backfill, context, req, _flag(data, "execute"))
    tasks = [backfill.task_json(r) for r in result.rows]
    return JSONResponse(
        {
            "executed": result.executed,
            "file_path": result.spec.file_path,
            "task": result.spec.task,
            "by": result.by.value,
            "count": len(tasks),
            "first": tasks[0] if tasks else None,
            "last": tasks[-1] if tasks else None,
            "tasks": tasks[:PREVIEW_TASKS],
        },
        status_code=201 if result.executed else 200,
    )


async def api_sql(request: Request) -> Response:
    data = await body_of(request)
    statement = _text(data, "sql").get("sql", "")
    max_rows = int_arg(_text(data, "max_rows"), "max_rows", 1000, 1, 100_000) or 1000
    result = await run_in_threadpool(ops.run_sql, ctx(request), statement, max_rows)
    rows = [[_plain(v) for v in row] for row in result.rows]
    return JSONResponse({"columns": result.columns, "rows": rows, "truncated": result.truncated})


def _plain(value: Any) -> Any:
    """A database value JSON can carry (PostgreSQL may return Decimal, datetime, bytes)."""
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


# -- flowlord's endpoints ------------------------------------------------------------------------


def info(request: Request) -> Response:
    """flowlord's ``/info``: app, version, run time, and per file per phase its schedule,
    next fire, children and warning."""
    context = ctx(request)
    now = context.clock.now()
    with context.db.read() as conn:
        rows = phase_rows(conn)
        state = browse.paused_and_next(conn)
    children: dict[tuple[str, str], list[str]] = {}
    for row in rows:  # a child names its parent's task, or its topic
        if row.depends_on:
            children.setdefault((row.file_path, row.depends_on), []).append(row.task)
    workflow: dict[str, dict[str, Any]] = {}
    for row in rows:
        named = children.get((row.file_path, row.task), [])
        if ":" in row.task:
            named = named + children.get((row.file_path, topic_of(row.task)), [])
        entry: dict[str, Any] = {
            "schedule": [row.rule] if row.rule else [],
            "child": named,
            "warning": row.status,
        }
        nxt = state.get((row.file_path, row.task), (False, None))[1]
        if nxt is not None:
            entry["next"] = iso(nxt)
        workflow.setdefault(row.file_path, {})[row.task] = entry
    return JSONResponse(
        {
            "app_name": "tomlflow",
            "version": tomlflow_version(),
            "run_time": str(now - context.started).split(".")[0],
            "workflow": workflow,
        }
    )


async def refresh(request: Request) -> Response:
    result = await run_in_threadpool(actions.refresh, ctx(request))
    return JSONResponse(
        {
            "files": result.keys,
            "errors": {key: error for key, error in result.errors},
            "updated": iso(ctx(request).clock.now()),
        }
    )


async def backload(request: Request) -> Response:
    """flowlord's ``/backload``: ``{"task", "job", "from", "to", "at", "by", "meta",
    "meta-file", "execute"}``; answers ``{"Status", "Count", "Tasks"}``."""
    data = await body_of(request)
    data = {k.replace("-", "_"): v for k, v in data.items()}
    if data.get("job") and data.get("task") and ":" not in str(data["task"]):
        data["task"] = f"{data['task']}:{data['job']}"
    context = ctx(request)
    req = await run_in_threadpool(ops.backfill_request, context, _backfill_fields(data))
    result = await run_in_threadpool(actions.backfill, context, req, _flag(data, "execute"))
    status = f"phase found in {result.spec.file_path}"
    status = ("Executed: " if result.executed else "DRY RUN ONLY: ") + status
    tasks = [
        {
            "type": row.task.partition(":")[0],
            "job": row.task.partition(":")[2],
            "info": row.info,
            "meta": urlencode(sorted(row.meta.items())),
            "id": row.task_id,
        }
        for row in result.rows[:PREVIEW_TASKS]
    ]
    return JSONResponse({"Status": status, "Count": len(result.rows), "Tasks": tasks})


def task(request: Request) -> Response:
    """flowlord's ``/task/{id}``: an execution by id, or the newest of a chain (task_id)."""
    context = ctx(request)
    key = request.path_params["id"]
    with context.db.read() as conn:
        if key.isdigit():
            found = history.get_execution(conn, int(key))
        else:
            chain = browse.chain_of(conn, key)
            found = chain[-1] if chain else None
    if found is None:
        raise TaskNotFound(f"task {key}")
    data = run_json(found)
    data.update(
        type=found.topic,
        result=found.status.value,
        created=data["created_at"],
        started=data["started_at"],
        ended=data["ended_at"],
    )
    return JSONResponse(data)


ROUTES = [
    Route("/api/phases", api_phases),
    Route("/api/runs", api_runs),
    Route("/api/runs/{id:int}", api_run),
    Route("/api/runs/{id:int}/logs", api_logs),
    Route("/api/next", api_next),
    Route("/api/logs", api_log_search),
    Route("/api/trigger", api_trigger, methods=["POST"]),
    Route("/api/retry", api_retry, methods=["POST"]),
    Route("/api/mark", api_mark, methods=["POST"]),
    Route("/api/cancel", api_cancel, methods=["POST"]),
    Route("/api/pause", api_pause, methods=["POST"]),
    Route("/api/resume", api_pause, methods=["POST"]),
    Route("/api/backfill", api_backfill, methods=["POST"]),
    Route("/api/sql", api_sql, methods=["POST"]),
    Route("/info", info),
    Route("/refresh", refresh, methods=["GET", "POST"]),
    Route("/backload", backload, methods=["POST"]),
    Route("/task/{id}", task),
]
