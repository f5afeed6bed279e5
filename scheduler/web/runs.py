"""``/runs``: every execution, filtered and paginated, exported as CSV or JSON; ``/runs/{id}``:
one execution with its attempts, chain and log (searchable, downloadable, followed live)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from scheduler.store import browse, history
from scheduler.store.browse import RunFilter
from scheduler.store.history import FINISHED, Status, Trigger
from scheduler.web import actions, svg
from scheduler.web.context import WebContext, ctx
from scheduler.web.render import BadRequest, after_arg, int_arg, page, text_arg, time_arg

FILTER_KEYS = ("task", "file", "status", "trigger", "since", "until", "from", "to")
LOG_PAGE = 2000


def run_filter(params: Mapping[str, str]) -> RunFilter:
    """The filters of ``/runs`` and ``/api/runs`` from a query string; 400 on bad values."""
    status, trigger = text_arg(params, "status"), text_arg(params, "trigger")
    if status and status not in Status.__members__.values():
        raise BadRequest(f"status: {status!r} is not one of {', '.join(s.value for s in Status)}")
    if trigger and trigger not in Trigger.__members__.values():
        names = ", ".join(t.value for t in Trigger)
        raise BadRequest(f"trigger: {trigger!r} is not one of {names}")
    return RunFilter(
        task=text_arg(params, "task"),
        file_path=text_arg(params, "file"),
        status=Status(status) if status else None,
        trigger=Trigger(trigger) if trigger else None,
        since=time_arg(params, "since"),
        until=time_arg(params, "until"),
        tt_from=time_arg(params, "from"),
        tt_to=time_arg(params, "to"),
    )


def run_page(context: WebContext, params: Mapping[str, str]) -> tuple[browse.RunPage, int]:
    where = run_filter(params)
    limit = int_arg(params, "limit", 50, 1, browse.MAX_PAGE) or 50
    before = int_arg(params, "before")
    after = int_arg(params, "after")
    with context.db.read() as conn:
        found = browse.list_runs(conn, where, limit, before=before, after=after)
    return found, found.total


def runs(request: Request) -> Response:
    context = ctx(request)
    params = request.query_params
    found, total = run_page(context, params)
    kept = {k: params[k] for k in (*FILTER_KEYS, "limit") if params.get(k)}
    return page(
        request,
        "runs.html",
        page_=found,
        total=total,
        cap=browse.COUNT_CAP,
        filters=kept,
        statuses=[s.value for s in Status],
        triggers=[t.value for t in Trigger],
        query=urlencode(kept),
        older=urlencode({**kept, "before": found.older}) if found.older else None,
        newer=urlencode({**kept, "after": found.newer}) if found.newer else None,
    )


def export_rows(context: WebContext, where: RunFilter) -> Iterator[dict[str, object]]:
    """The filtered set, newest first, at most EXPORT_CAP rows, each batch in its own short
    read (no transaction stays open while the client reads)."""
    sent, before = 0, None
    while sent < browse.EXPORT_CAP:
        with context.db.read() as conn:
            found = browse.list_runs(conn, where, browse.MAX_PAGE, before=before)
        for row in found.rows:
            yield browse.export_row(row)
        sent += len(found.rows)
        if found.older is None:
            return
        before = found.older


def csv_lines(rows: Iterator[dict[str, object]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=browse.EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_lines(rows: Iterator[dict[str, object]]) -> Iterator[str]:
    yield "["
    for i, row in enumerate(rows):
        yield ("," if i else "") + "\n" + json.dumps(row)
    yield "\n]\n"


def export(request: Request) -> Response:
    context = ctx(request)
    kind = request.path_params["kind"]
    if kind not in ("csv", "json"):
        raise BadRequest(f"export as {kind!r}: use runs.csv or runs.json", 404)
    rows = export_rows(context, run_filter(request.query_params))
    if kind == "csv":
        body, media = csv_lines(rows), "text/csv; charset=utf-8"
    else:
        body, media = json_lines(rows), "application/json"
    return StreamingResponse(
        body,
        media_type=media,
        headers={"content-disposition": f'attachment; filename="runs.{kind}"'},
    )


def _execution(context: WebContext, execution_id: int) -> history.Execution:
    with context.db.read() as conn:
        execution = history.get_execution(conn, execution_id)
    if execution is None:
        raise BadRequest(f"no execution with id {execution_id}", 404)
    return execution


def run_detail(request: Request) -> Response:
    context = ctx(request)
    execution_id = request.path_params["id"]
    search = text_arg(request.query_params, "q", 200) or ""
    now = context.clock.now()
    with context.db.read() as conn:
        execution = history.get_execution(conn, execution_id)
        if execution is None:
            raise BadRequest(f"no execution with id {execution_id}", 404)
        attempts = browse.attempts_of(conn, execution)
        chain = browse.chain_of(conn, execution.task_id)
        children = browse.children_of(conn, execution.id)
        parent = (
            history.get_execution(conn, execution.parent_execution_id)
            if execution.parent_execution_id
            else None
        )
        lines = browse.log_lines(conn, execution.id, search=search, limit=LOG_PAGE)
        total_lines = browse.log_count(conn, execution.id)
    spans = [
        svg.Span(f"{e.task} #{e.id}", e.status.value, e.started_at, e.ended_at, f"/runs/{e.id}")
        for e in chain
    ]
    return page(
        request,
        "run.html",
        e=execution,
        attempts=attempts,
        chain=chain,
        children=children,
        parent=parent,
        lines=lines,
        total_lines=total_lines,
        search=search,
        gantt=svg.gantt(spans, now),
        live=execution.status not in FINISHED,
        last_seq=lines[-1].seq if lines else -1,
    )


def log_fragment(request: Request) -> Response:
    """New log lines after ``after`` for the live follow, with the next poller while the
    execution is still queued or running (htmx swaps this for the old poller)."""
    context = ctx(request)
    execution_id = request.path_params["id"]
    after = after_arg(request.query_params)
    with context.db.read() as conn:
        execution = history.get_execution(conn, execution_id)
        if execution is None:
            raise BadRequest(f"no execution with id {execution_id}", 404)
        lines = browse.log_lines(conn, execution_id, after_seq=after, limit=LOG_PAGE)
    return page(
        request,
        "_log_follow.html",
        e=execution,
        lines=lines,
        live=execution.status not in FINISHED,
        last_seq=lines[-1].seq if lines else after,
    )


def log_download(request: Request) -> Response:
    context = ctx(request)
    execution = _execution(context, request.path_params["id"])

    def body() -> Iterator[str]:
        after = -1
        while True:
            with context.db.read() as conn:
                lines = browse.log_lines(conn, execution.id, after_seq=after, limit=5000)
            if not lines:
                return
            yield "".join(f"{x.line}\n" for x in lines)
            after = lines[-1].seq

    return StreamingResponse(
        body(),
        media_type="text/plain; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="run-{execution.id}.log"'},
    )


async def retry_action(request: Request) -> Response:
    form = await request.form()
    execution_id = int_arg({"id": str(form.get("id", ""))}, "id")
    if execution_id is None:
        raise BadRequest("id: required")
    downstream = str(form.get("downstream", "")) in ("1", "on", "true")
    rerun = await run_in_threadpool(actions.retry, ctx(request), execution_id, downstream)
    note = f"queued attempt {rerun.attempt}"
    if rerun.cancelled:
        note += f"; cancelled queued downstream {', '.join(map(str, rerun.cancelled))}"
    return RedirectResponse(f"/runs/{rerun.execution_id}?{urlencode({'done': note})}", 303)


def mark_args(fields: Mapping[str, str]) -> tuple[int, Status]:
    """The execution and the result a mark names (the form's and the API's); BadRequest else."""
    execution_id = int_arg(fields, "id")
    result = fields.get("result", "")
    if execution_id is None or result not in ("complete", "error"):
        raise BadRequest("id and result (complete or error) are required")
    return execution_id, Status(result)


async def mark_action(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    execution_id, result = mark_args(form)
    marked = await run_in_threadpool(
        actions.mark, ctx(request), execution_id, result, form.get("msg", ""), who(request)
    )
    note = f"marked {result}" if marked.changed else f"already {result}"
    if marked.released:
        note += f"; released {marked.released} child runs"
    return RedirectResponse(f"/runs/{execution_id}?{urlencode({'done': note})}", 303)


async def cancel_action(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    execution_id = int_arg(form, "id")
    if execution_id is None:
        raise BadRequest("id: required")
    outcome, _ = await run_in_threadpool(actions.cancel, ctx(request), execution_id, who(request))
    note = {
        "cancelled": "cancelled (it was queued)",
        "requested": "the scheduler running it will cancel it",
    }[outcome.value]
    back = form.get("back", "")
    target = back if back == "/" else f"/runs/{execution_id}"
    return RedirectResponse(f"{target}?{urlencode({'done': note})}", 303)


def who(request: Request) -> str:
    """Who a mark names: the dashboard and the address the request came from."""
    host = request.client.host if request.client else "unknown"
    return f"web ({host})"


ROUTES = [
    Route("/runs", runs),
    Route("/runs/export.{kind:str}", export),
    Route("/runs/{id:int}", run_detail),
    Route("/runs/{id:int}/log", log_fragment),
    Route("/runs/{id:int}/log.txt", log_download),
    Route("/actions/retry", retry_action, methods=["POST"]),
    Route("/actions/mark", mark_action, methods=["POST"]),
    Route("/actions/cancel", cancel_action, methods=["POST"]),
]
