"""The other pages: alerts by day, file reports, about, the read-only SQL console, the
backfill form with its dry-run preview; login; ``/healthz``; the refresh action."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from scheduler.errors import TomlflowError
from scheduler.redact import redact
from scheduler.store import browse, lease, search
from scheduler.store.db import Database
from scheduler.store.readonly import QueryResult
from scheduler.store.search import Hit, SearchQuery
from scheduler.web import actions
from scheduler.web.context import WebContext, ctx
from scheduler.web.render import BadRequest, int_arg, page, text_arg, time_arg, tomlflow_version
from scheduler.web.security import SESSION_COOKIE, safe_next

SQL_MAX_ROWS = 1000
SQL_CSV_MAX_ROWS = 100_000


# -- alerts and files ----------------------------------------------------------------------------


def alerts_page(request: Request) -> Response:
    context = ctx(request)
    params = request.query_params
    day = text_arg(params, "day", 10)
    if day and time_arg(params, "day") is None:
        raise BadRequest("day: expected YYYY-MM-DD")
    task = text_arg(params, "task")
    before = int_arg(params, "before")
    with context.db.read() as conn:
        rows = browse.list_alerts(conn, day=day, task=task, limit=200, before=before)
    groups: dict[str, dict[tuple[str, str], list[browse.AlertRow]]] = defaultdict(dict)
    for row in rows:
        groups[row.created_at[:10]].setdefault((row.file_path, row.task), []).append(row)
    older = urlencode({**dict(params), "before": rows[-1].id}) if len(rows) == 200 else None
    return page(request, "alerts.html", groups=groups, day=day, task=task, older=older)


def files_page(request: Request) -> Response:
    context = ctx(request)
    params = request.query_params
    path = text_arg(params, "path")
    before = int_arg(params, "before")
    with context.db.read() as conn:
        reports = browse.list_file_reports(conn, path=path, limit=100, before=before)
        queued = {r.id: browse.file_report_runs(conn, r, 10) for r in reports if r.queued}
    older = urlencode({**dict(params), "before": reports[-1].id}) if len(reports) == 100 else None
    return page(request, "files.html", reports=reports, queued=queued, path=path, older=older)


# -- log search ----------------------------------------------------------------------------------


def search_logs(context: WebContext, params: Mapping[str, str]) -> tuple[str, list[Hit]]:
    """Lines of all stored output holding every word of ``q`` (as ``tomlflow logs --search``),
    narrowed by ``task``, ``since``, ``until``; at most ``limit`` (500), newest first."""
    words = text_arg(params, "q", 500) or ""
    if not words:
        return "", []
    query = SearchQuery(
        words,
        text_arg(params, "task"),
        time_arg(params, "since"),
        time_arg(params, "until"),
        int_arg(params, "limit", 100, 1, 500) or 100,
    )
    try:
        with context.db.read() as conn:
            return words, search.search(conn, query)
    except ValueError as exc:
        raise BadRequest(f"q: {exc}") from None


def logs_page(request: Request) -> Response:
    params = request.query_params
    words, hits = search_logs(ctx(request), params)
    return page(
        request,
        "logs.html",
        q=words,
        hits=hits,
        task=params.get("task", ""),
        since=params.get("since", ""),
        until=params.get("until", ""),
    )


# -- about ---------------------------------------------------------------------------------------


def masked_config(context: WebContext) -> dict[str, Any]:
    """The configuration as the About page shows it: URLs without passwords, no secrets."""
    config = context.config
    return {
        "config file": str(config.source) if config.source else "(defaults)",
        "workflows": str(config.workflows),
        "database": redact(config.database, config.database),
        "read-only database": (
            redact(config.readonly_database, config.readonly_database)
            if config.readonly_database
            else "- (the same, opened read-only)"
        ),
        "timezone": config.timezone,
        "refresh": str(config.refresh),
        "max_workers": config.max_workers,
        "watch": str(config.watch) if config.watch else "-",
        "workers": ", ".join(sorted(config.workers)) or "-",
        "alerts webhook": "set (hidden)" if config.alerts.webhook else "-",
        "retention": str(config.retention) if config.retention else "-",
        "web": f"{config.web.host}:{config.web.port}, token "
        + ("set (hidden)" if config.web.token else "not set"),
    }


def about(request: Request) -> Response:
    context = ctx(request)
    now = context.clock.now()
    db: Database = context.db
    with db.read() as conn:
        tables = browse.table_rows(conn)
        size = browse.database_bytes(conn)
        holder = lease.current(conn)
    return page(
        request,
        "about.html",
        version=tomlflow_version(),
        uptime=(now - context.started).total_seconds(),
        started=context.started,
        schema=db.version(),
        tables=tables,
        size=size,
        holder=holder,
        config=masked_config(context),
        backend=db.engine.dialect.name,
    )


# -- SQL console ---------------------------------------------------------------------------------


def run_sql(context: WebContext, statement: str, max_rows: int) -> QueryResult:
    """The statement on the read-only connection ``tomlflow sql`` uses."""
    if not statement.strip():
        raise BadRequest("sql: give one statement")
    return context.readonly().run_sql(statement, max_rows)


async def sql_page(request: Request) -> Response:
    context = ctx(request)
    statement = ""
    if request.method == "POST":
        form = await request.form()
        statement = str(form.get("sql", ""))
    else:
        statement = request.query_params.get("sql", "")
    result, problem = None, None
    if statement.strip():
        try:
            result = await run_in_threadpool(run_sql, context, statement, SQL_MAX_ROWS)
        except TomlflowError as exc:
            problem = str(exc)
    return page(
        request,
        "sql.html",
        statement=statement,
        result=result,
        problem=problem,
        max_rows=SQL_MAX_ROWS,
        status=400 if problem else 200,
    )


async def sql_csv(request: Request) -> Response:
    context = ctx(request)
    form = await request.form()
    statement = str(form.get("sql", ""))
    result = await run_in_threadpool(run_sql, context, statement, SQL_CSV_MAX_ROWS)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows(result.rows)
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="query.csv"'},
    )


# -- backfill ------------------------------------------------------------------------------------


def backfill_request(context: WebContext, form: dict[str, str]) -> actions.BackfillRequest:
    """A backfill from form or JSON fields: task, file, from, to, at, by, meta (``KEY=V1,V2``
    lines), meta_file (a path relative to the workflow folder)."""
    task = text_arg(form, "task")
    if not task:
        raise BadRequest("task: required")
    spec = actions.find_spec(context, task, text_arg(form, "file"))
    metas = tuple(line.strip() for line in form.get("meta", "").splitlines() if line.strip())
    meta_file = text_arg(form, "meta_file")
    return actions.BackfillRequest(
        spec=spec,
        start=time_arg(form, "from"),
        end=time_arg(form, "to"),
        at=time_arg(form, "at"),
        by=text_arg(form, "by"),
        meta=metas,
        meta_file=_meta_file(context, meta_file) if meta_file else None,
    )


def _meta_file(context: WebContext, name: str) -> Path:
    """A meta-file inside the workflow folder (never elsewhere on the machine)."""
    root = context.config.workflow_root.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise BadRequest(f"meta_file: no such file in the workflow folder: {name}")
    return path


def _form_dict(form: FormData) -> dict[str, str]:
    return {k: str(v) for k, v in form.items()}


async def backfill_page(request: Request) -> Response:
    context = ctx(request)
    fields = dict(request.query_params)
    result, problem = None, None
    if request.method == "POST":
        fields = _form_dict(await request.form())
        execute = fields.get("execute") == "1"
        try:
            req = await run_in_threadpool(backfill_request, context, fields)
            result = await run_in_threadpool(actions.backfill, context, req, execute)
        except (BadRequest, TomlflowError) as exc:
            problem = exc.message if isinstance(exc, BadRequest) else str(exc)
        if result is not None and result.executed:
            note = f"queued {len(result.rows)} runs of {result.spec.task}"
            query = urlencode({"task": result.spec.task, "trigger": "backfill", "done": note})
            return RedirectResponse(f"/runs?{query}", 303)
    with context.db.read() as conn:
        tasks = browse.all_tasks(conn)
    return page(
        request,
        "backfill.html",
        fields=fields,
        tasks=tasks,
        result=result,
        problem=problem,
        status=400 if problem else 200,
    )


# -- login, health, refresh ----------------------------------------------------------------------


async def login(request: Request) -> Response:
    context = ctx(request)
    if request.method == "GET":
        target = safe_next(request.query_params.get("next", "/"))
        return page(request, "login.html", next=target, wrong=False)
    form = _form_dict(await request.form())
    target = safe_next(form.get("next", "/"))
    if not context.guard.token_ok(form.get("token", "")):
        return page(request, "login.html", next=target, wrong=True, status=401)
    response = RedirectResponse(target, 303)
    response.set_cookie(
        SESSION_COOKIE,
        context.guard.session_value(),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=int(timedelta(days=7).total_seconds()),
    )
    return response


def healthz(request: Request) -> Response:
    """200 when the database answers, 503 otherwise (for load balancers)."""
    context = ctx(request)
    try:
        context.db.version()
    except TomlflowError:
        return JSONResponse({"status": "database unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def refresh_action(request: Request) -> Response:
    result = await run_in_threadpool(actions.refresh, ctx(request))
    note = f"refreshed: {', '.join(result.keys) or 'nothing changed'}"
    return RedirectResponse("/workflows?" + urlencode({"done": note}), 303)


ROUTES = [
    Route("/alerts", alerts_page),
    Route("/files", files_page),
    Route("/logs", logs_page),
    Route("/about", about),
    Route("/sql", sql_page, methods=["GET", "POST"]),
    Route("/sql.csv", sql_csv, methods=["POST"]),
    Route("/backfill", backfill_page, methods=["GET", "POST"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/healthz", healthz),
    Route("/actions/refresh", refresh_action, methods=["POST"]),
]
