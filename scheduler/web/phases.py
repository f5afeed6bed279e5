"""``/phases/{task}``: one phase: its rule in words with the next fires, a duration trend of
its last 100 runs, success rate and recent runs; buttons to trigger, pause, resume, backfill."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scheduler import planner
from scheduler.catalog import depends_on_matches
from scheduler.store import browse
from scheduler.store.history import PhaseState
from scheduler.store.workflows import phase_rows
from scheduler.validation import PhaseSpec
from scheduler.web import actions, cronwords, svg
from scheduler.web.context import WebContext, ctx
from scheduler.web.render import BadRequest, page, seconds, text_arg, time_arg

NEXT_COUNT = 10
TREND_RUNS = 100


def next_fires(
    spec: PhaseSpec, state: PhaseState | None, default_tz: str, now: datetime, count: int
) -> list[planner.Upcoming]:
    """The next ``count`` fires as the engine will fire them (``planner.upcoming``: pause,
    DST policy, catch-up after downtime, marked ``late``)."""
    return planner.upcoming(spec, state, now, count, default_tz)


def rule_words(spec: PhaseSpec, default_tz: str) -> list[str]:
    rule = spec.rule
    if rule is None:
        return []
    words = []
    if rule.cron is not None:
        words.append("runs " + cronwords.describe(rule.cron, rule.tz or default_tz))
    if spec.depends_on:
        words.append(f"runs after {spec.depends_on} completes")
    if rule.files:
        words.append(f"runs when a file matching {rule.files} is reported")
    if rule.offset:
        words.append(
            f"task time = scheduled time {'+' if rule.offset.days >= 0 else '-'} {abs(rule.offset)}"
        )
    if spec.retry:
        words.append(
            f"retries {spec.retry} time(s), {seconds(rule.retry_delay.total_seconds())} apart"
            f"{' (doubling)' if rule.retry_backoff.value == 'exponential' else ''}"
        )
    if rule.timeout:
        words.append(f"killed after {seconds(rule.timeout.total_seconds())}")
    if rule.is_batch:
        words.append("runs as a batch (for/by/meta)")
    return words


def _phase_page(context: WebContext, request: Request) -> dict[str, Any]:
    task = request.path_params["task"]
    spec = actions.find_spec(context, task, text_arg(request.query_params, "file"))
    now = context.clock.now()
    with context.db.read() as conn:
        recent = browse.phase_runs(conn, spec.file_path, spec.task, TREND_RUNS)
        counts = browse.phase_counts_of(conn, spec.file_path, spec.task)
        state = browse.phase_state_of(conn, spec.file_path, spec.task)
        siblings = [context.spec(r) for r in phase_rows(conn, spec.file_path)]
    children = [s for s in siblings if depends_on_matches(s.depends_on, spec.task)]
    trend = [
        (
            (e.ended_at - e.started_at).total_seconds() if e.started_at and e.ended_at else None,
            e.status.value,
            e.id,
        )
        for e in reversed(recent)
    ]
    return {
        "spec": spec,
        "paused": bool(state and state.paused),
        "words": rule_words(spec, context.config.timezone),
        "fires": next_fires(spec, state, context.config.timezone, now, NEXT_COUNT),
        "recent": recent[:20],
        "counts": counts,
        "trend": svg.trend(trend, f"duration of the last {len(trend)} runs"),
        "children": children,
    }


def phase(request: Request) -> Response:
    return page(request, "phase.html", **_phase_page(ctx(request), request))


def _meta_lines(text: str) -> dict[str, str]:
    meta = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise BadRequest(f"meta: {line.strip()!r} is not KEY=VALUE")
        meta[key.strip()] = value.strip()
    return meta


def phase_url(spec: PhaseSpec, **extra: str) -> str:
    return f"/phases/{spec.task}?" + urlencode({"file": spec.file_path, **extra})


async def trigger_action(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    context = ctx(request)
    spec = await run_in_threadpool(
        actions.find_spec, context, form.get("task", ""), text_arg(form, "file")
    )
    at, meta = time_arg(form, "at"), _meta_lines(form.get("meta", ""))
    rows = await run_in_threadpool(actions.trigger, context, spec, at, meta)
    if len(rows) == 1:
        return RedirectResponse(f"/runs/{rows[0].id}?" + urlencode({"done": "queued"}), 303)
    note = f"queued {len(rows)} runs"
    return RedirectResponse("/runs?" + urlencode({"task": spec.task, "done": note}), 303)


async def pause_action(request: Request) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    context = ctx(request)
    paused = request.url.path.endswith("/pause")
    spec = await run_in_threadpool(
        actions.find_spec, context, form.get("task", ""), text_arg(form, "file")
    )
    changed = await run_in_threadpool(actions.set_paused, context, spec, paused)
    word = "paused" if paused else "resumed"
    return RedirectResponse(phase_url(spec, done=word if changed else f"already {word}"), 303)


ROUTES = [
    Route("/phases/{task:path}", phase),
    Route("/actions/trigger", trigger_action, methods=["POST"]),
    Route("/actions/pause", pause_action, methods=["POST"]),
    Route("/actions/resume", pause_action, methods=["POST"]),
]
