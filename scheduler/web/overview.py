"""``/``: is a scheduler running, what runs now, what comes next, today, failures, heat-map.
``/fragments/running`` is the live part htmx refreshes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from scheduler.store import browse, lease
from scheduler.store.browse import RunFilter
from scheduler.store.history import Execution, Status
from scheduler.web import svg
from scheduler.web.context import HEAT_DAYS, ctx
from scheduler.web.render import page

NEXT_WINDOW = timedelta(hours=24)
NEXT_SHOWN = 20


@dataclass(frozen=True)
class LeaseView:
    """The scheduler holding the database, as the overview shows it."""

    holder: lease.Holder | None
    alive: bool
    heartbeat_age: float | None


@dataclass(frozen=True)
class NextFire:
    file_path: str
    task: str
    at: datetime


def scheduler_state(conn: Connection, now: datetime) -> LeaseView:
    holder = lease.current(conn)
    if holder is None:
        return LeaseView(None, False, None)
    age = (now - holder.heartbeat).total_seconds()
    return LeaseView(holder, not holder.is_gone(now), age)


def next_fires(conn: Connection, now: datetime) -> list[NextFire]:
    """The scheduler's own next fire of each unpaused phase within NEXT_WINDOW, soonest first."""
    fires = [
        NextFire(file_path, task, at)
        for (file_path, task), (paused, at) in browse.paused_and_next(conn).items()
        if at is not None and not paused and at <= now + NEXT_WINDOW
    ]
    return sorted(fires, key=lambda f: (f.at, f.file_path, f.task))[:NEXT_SHOWN]


def running_now(conn: Connection) -> tuple[list[Execution], int]:
    running = browse.executions_with_status(conn, Status.RUNNING, 50)
    queued = browse.count_runs(conn, RunFilter(status=Status.QUEUED), cap=9999)
    return running, queued


def overview(request: Request) -> Response:
    context = ctx(request)
    now = context.clock.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with context.db.read() as conn:
        state = scheduler_state(conn, now)
        running, queued = running_now(conn)
        fires = next_fires(conn, now)
        hours = context.hours.get(conn, now)
        failures = browse.recent_failures(conn, 8)
        alerts = browse.list_alerts(conn, limit=8)
        broken = [f for f in browse.file_summaries(conn) if f.error or f.phase_errors][:20]
        days = context.heat.get(conn, context.db, now)
    labels = [f"{midnight.date().isoformat()}T{h:02d}" for h in range(24)]
    bars = [(f"{label[-2:]}:00", hours.counts.get(label, {})) for label in labels]
    return page(
        request,
        "overview.html",
        state=state,
        running=running,
        queued=queued,
        fires=fires,
        today=hours.by_status(),
        histogram=svg.histogram(bars, "runs created per hour today"),
        failures=failures,
        alerts=alerts,
        broken=broken,
        heatmap=svg.heatmap(days, midnight.date(), HEAT_DAYS),
        heat_total=sum(days.values()),
    )


def running_fragment(request: Request) -> Response:
    context = ctx(request)
    with context.db.read() as conn:
        running, queued = running_now(conn)
        state = scheduler_state(conn, context.clock.now())
    response = page(request, "_running.html", running=running, queued=queued, state=state)
    return HTMLResponse(response.body, headers={"cache-control": "no-store"})


ROUTES = [
    Route("/", overview),
    Route("/fragments/running", running_fragment),
]
