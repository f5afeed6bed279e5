"""``/metrics`` in Prometheus text format (the official ``prometheus_client``), read from the
database at each scrape, so it needs no running scheduler and works for any number of them:
executions by phase and status, queue depth, running, cron lateness (a histogram over the cron
fires created in the last hour), last success per phase, the scheduler's heartbeat, and its
tick durations (a histogram it renews with the heartbeat)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scheduler.store import browse, lease
from scheduler.tasktime import from_iso
from scheduler.web.context import METRICS_TTL_S, WebContext, ctx

LATENESS_WINDOW = timedelta(hours=1)
LATENESS_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class DatabaseCollector(Collector):
    """Reads every metric from the database when Prometheus scrapes."""

    def __init__(self, context: WebContext) -> None:
        self.context = context

    def collect(self) -> Iterator[Metric]:
        now = self.context.clock.now()
        with self.context.db.read() as conn:
            finished = browse.phase_counts(conn)
            active = browse.active_counts(conn)
            success = browse.last_success_by_phase(conn)
            late = browse.cron_lateness(conn, now - LATENESS_WINDOW)
            holder = lease.current(conn)
            ticks = lease.tick_stats(conn)
        yield _executions(finished, active)
        for status, name, text in (
            ("queued", "tomlflow_queue_depth", "Executions queued (waiting or retrying)."),
            ("running", "tomlflow_running", "Executions running now."),
        ):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], sum(n for (_, _, s), n in active.items() if s == status))
            yield gauge
        last = GaugeMetricFamily(
            "tomlflow_last_success_timestamp_seconds",
            "When each phase last completed (Unix time).",
            labels=["file", "task"],
        )
        for (file_path, task), ended in sorted(success.items()):
            last.add_metric([file_path, task], from_iso(ended).timestamp())
        yield last
        yield _lateness(late)
        if ticks is not None:
            yield _ticks(ticks)
        up = GaugeMetricFamily("tomlflow_scheduler_up", "1 while a live scheduler holds the lease.")
        up.add_metric([], 1.0 if holder is not None and not holder.is_gone(now) else 0.0)
        yield up


def _executions(
    finished: dict[tuple[str, str], browse.PhaseCounts], active: dict[tuple[str, str, str], int]
) -> Metric:
    family = GaugeMetricFamily(
        "tomlflow_executions",
        "Executions per phase and status (finished ones as kept in phase_stats).",
        labels=["file", "task", "status"],
    )
    for (file_path, task), c in sorted(finished.items()):
        for status, n in (
            ("complete", c.complete),
            ("failed", c.failed),
            ("warn", c.warn),
            ("skipped", c.skipped),
            ("cancelled", c.cancelled),
        ):
            if n:
                family.add_metric([file_path, task, status], n)
    for (file_path, task, status), n in sorted(active.items()):
        family.add_metric([file_path, task, status], n)
    return family


def _lateness(values: list[float]) -> Metric:
    buckets: list[tuple[str, float]] = []
    for bound in LATENESS_BUCKETS:
        buckets.append((str(bound), sum(1 for v in values if v <= bound)))
    buckets.append(("+Inf", len(values)))
    total = float(sum(values))
    family = HistogramMetricFamily(
        "tomlflow_cron_lateness_seconds",
        "Seconds from a cron fire's scheduled time to its start, fires of the last hour.",
    )
    family.add_metric([], buckets, sum_value=total)
    return family


def _ticks(stats: lease.TickStats) -> Metric:
    buckets = [(str(bound), float(n)) for bound, n in zip(stats.BUCKETS, stats.counts, strict=True)]
    buckets.append(("+Inf", float(stats.total)))
    family = HistogramMetricFamily(
        "tomlflow_tick_duration_seconds",
        "How long the lease holder's ticks took, since it started (reported with its heartbeat).",
    )
    family.add_metric([], buckets, sum_value=stats.seconds)
    return family


def metrics(request: Request) -> Response:
    """The metrics, read from the database at most every METRICS_TTL_S."""
    context = ctx(request)
    cache = context.metrics
    with cache.lock:
        if time.monotonic() - cache.read_at > METRICS_TTL_S:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(DatabaseCollector(context))
            cache.body, cache.read_at = generate_latest(registry), time.monotonic()
        body = cache.body
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route("/metrics", metrics)]
