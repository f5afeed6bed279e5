"""The overview's caches: past hours and past days are re-read on a schedule; the current
hour and today are always live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette

from scheduler.web.context import DayTotals, HourCounts
from tests.web.test_pages import db_of, queue

NOW = datetime(2024, 1, 2, 15, 30, tzinfo=UTC)


def test_hour_counts_keep_past_hours_and_read_the_current_one_live(app: Starlette) -> None:
    db, cache = db_of(app), HourCounts()
    queue(db, created="2024-01-02T10:00:00Z")
    with db.read() as conn:
        first = cache.get(conn, NOW)
    queue(db, created="2024-01-02T11:00:00Z")  # a past hour: not re-read within the TTL
    queue(db, created="2024-01-02T15:10:00Z")  # the current hour: live
    with db.read() as conn:
        second = cache.get(conn, NOW)
        later = cache.get(conn, NOW + timedelta(hours=1))  # a new hour: past hours re-read
    assert first.counts == {"2024-01-02T10": {"queued": 1}}
    assert second.counts == {"2024-01-02T10": {"queued": 1}, "2024-01-02T15": {"queued": 1}}
    assert set(later.counts) == {"2024-01-02T10", "2024-01-02T11", "2024-01-02T15"}


def test_day_totals_read_past_days_once_a_day_and_today_live(app: Starlette) -> None:
    db, cache = db_of(app), DayTotals()
    queue(db, created="2023-12-30T10:00:00Z")
    with db.read() as conn:
        first = cache.get(conn, db, NOW)
    queue(db, created="2023-12-31T10:00:00Z")  # a past day: kept until the next read
    queue(db, created="2024-01-02T09:00:00Z")  # today: live
    with db.read() as conn:
        second = cache.get(conn, db, NOW)
        tomorrow = cache.get(conn, db, NOW + timedelta(days=1))
    assert first == {"2023-12-30": 1}
    assert second == {"2023-12-30": 1, "2024-01-02": 1}
    assert tomorrow == {"2023-12-30": 1, "2023-12-31": 1, "2024-01-02": 1}
