"""/metrics in Prometheus text format, read from the database."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from scheduler.store import history, lease
from scheduler.store.history import Status, Trigger
from scheduler.tasktime import iso
from tests.web.conftest import finish
from tests.web.test_pages import db_of, queue


def samples(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def test_metrics_count_phases_queue_running_success_and_lateness(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    now = app.state.ctx.clock.now()
    created = iso(now - timedelta(minutes=5))
    done, failed, running, waiting = queue(db, n=4, created=created, trigger=Trigger.CRON)
    finish(db, done, Status.COMPLETE, iso(now - timedelta(minutes=5) + timedelta(seconds=3)))
    finish(db, failed, Status.ERROR, created)
    with db.write() as conn:
        history.mark_running(conn, [running], now)
    found = samples(client)
    executions = {(lab["task"], lab["status"]): v for lab, v in found["tomlflow_executions"]}
    assert executions == {
        ("extract:orders", "complete"): 1,
        ("extract:orders", "failed"): 1,
        ("extract:orders", "running"): 1,
        ("extract:orders", "queued"): 1,
    }
    assert found["tomlflow_queue_depth"] == [({}, 1.0)]
    assert found["tomlflow_running"] == [({}, 1.0)]
    [(labels, when)] = found["tomlflow_last_success_timestamp_seconds"]
    assert labels == {"file": "etl.toml", "task": "extract:orders"} and when > 0
    buckets = {lab["le"]: v for lab, v in found["tomlflow_cron_lateness_seconds_bucket"]}
    assert buckets["+Inf"] == 3  # three of the four started
    # started 0 s, 3 s and 300 s after their scheduled time
    assert (buckets["2.0"], buckets["5.0"], buckets["60.0"], buckets["900.0"]) == (1, 2, 2, 3)
    assert found["tomlflow_scheduler_up"] == [({}, 0.0)]
    assert waiting


def test_metrics_show_the_holders_tick_durations(app: Starlette, client: TestClient) -> None:
    # given no scheduler: no tick histogram at all
    assert "tomlflow_tick_duration_seconds_bucket" not in samples(client)
    # given a scheduler that reported two ticks with its heartbeat
    db = db_of(app)
    now = app.state.ctx.clock.now()
    stats = lease.TickStats()
    stats.observe(0.002)
    stats.observe(0.3)
    with db.write() as conn:
        lease.acquire(conn, now)
        lease.renew(conn, now, stats)
    app.state.ctx.metrics.read_at = float("-inf")  # past the metrics cache
    found = samples(client)
    buckets = {lab["le"]: v for lab, v in found["tomlflow_tick_duration_seconds_bucket"]}
    assert (buckets["0.001"], buckets["0.0025"], buckets["0.25"], buckets["0.5"]) == (0, 1, 1, 2)
    assert buckets["+Inf"] == 2
    assert found["tomlflow_tick_duration_seconds_count"] == [({}, 2.0)]
