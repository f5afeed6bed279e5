"""What every handler works with: configuration, database, catalog, clock, and caches."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection
from starlette.requests import Request

from scheduler.catalog import Catalog, spec_from_row
from scheduler.clock import Clock
from scheduler.config import Config
from scheduler.store import browse
from scheduler.store.db import Database
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.store.workflows import PhaseRow
from scheduler.validation import PhaseSpec, require_command
from scheduler.web.security import Guard

log = logging.getLogger(__name__)

HEAT_DAYS = 90
HEAT_TTL_S = 3600.0
HOURS_TTL_S = 60.0
METRICS_TTL_S = 5.0


@dataclass
class DayTotals:
    """Executions per day for the heat-map. Past days change only when history is pruned, so
    they are read once a day and again at most hourly, in the background (a stale map is
    shown meanwhile); today is always read fresh (a small index range). Reading 90 past days
    walks a million index entries at a million executions: half a second to two."""

    days: dict[str, int] = field(default_factory=dict)
    key: str = ""
    read_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)
    refreshing: bool = False

    def get(self, conn: Connection, db: Database, now: datetime) -> dict[str, int]:
        start, end = browse.window(now, HEAT_DAYS)
        today = end - timedelta(days=1)
        key = today.date().isoformat()
        with self.lock:
            current, stale = self.key == key, time.monotonic() - self.read_at > HEAT_TTL_S
            past = dict(self.days)
        if not current:
            past = self._read(conn, start, today, key)
        elif stale:
            self.refresh_later(db, now)
        past.update(browse.daily_totals(conn, today, end))
        return past

    def _read(self, conn: Connection, start: datetime, today: datetime, key: str) -> dict[str, int]:
        days = browse.daily_totals(conn, start, today)
        with self.lock:
            self.days, self.key, self.read_at = days, key, time.monotonic()
        return dict(days)

    def refresh_later(self, db: Database, now: datetime) -> None:
        """Re-read the past days on a thread of their own (one at a time)."""
        with self.lock:
            if self.refreshing:
                return
            self.refreshing = True

        def work() -> None:
            try:
                start, end = browse.window(now, HEAT_DAYS)
                today = end - timedelta(days=1)
                with db.read() as conn:
                    self._read(conn, start, today, today.date().isoformat())
            except Exception:  # a closed database at shutdown: the next page reads again
                log.debug("heat-map refresh failed", exc_info=True)
            finally:
                with self.lock:
                    self.refreshing = False

        threading.Thread(target=work, name="heat-map", daemon=True).start()


@dataclass
class HourCounts:
    """Today's executions by hour and status. Hours before the current one are re-read at
    most every HOURS_TTL_S (their runs have mostly ended); the current hour is always live."""

    hours: dict[str, dict[str, int]] = field(default_factory=dict)
    key: str = ""
    read_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, conn: Connection, now: datetime) -> browse.Buckets:
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        hour = now.replace(minute=0, second=0, microsecond=0)
        key = hour.isoformat()
        with self.lock:
            fresh = self.key == key and time.monotonic() - self.read_at <= HOURS_TTL_S
            hours = dict(self.hours)
        if not fresh:
            hours = browse.hourly_counts(conn, midnight, hour).counts
            with self.lock:
                self.hours, self.key, self.read_at = hours, key, time.monotonic()
        now_hour = browse.hourly_counts(conn, hour, hour + timedelta(hours=1)).counts
        return browse.Buckets({**hours, **now_hour})


@dataclass
class MetricsCache:
    """The last /metrics text, served for METRICS_TTL_S: scrapers (often two) every 15 s or
    more never see it older than that, and a thousand phases' series are built once."""

    body: bytes = b""
    read_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class WebContext:
    config: Config
    db: Database
    catalog: Catalog
    clock: Clock
    guard: Guard
    started: datetime
    heat: DayTotals = field(default_factory=DayTotals)
    hours: HourCounts = field(default_factory=HourCounts)
    metrics: MetricsCache = field(default_factory=MetricsCache)
    _readonly: ReadOnlyDatabase | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def readonly(self) -> ReadOnlyDatabase:
        """The read-only connection ``tomlflow sql`` uses (``readonly_database`` when set),
        opened on first use."""
        with self._lock:
            if self._readonly is None:
                self._readonly = ReadOnlyDatabase(self.config.query_database)
            return self._readonly

    def spec(self, row: PhaseRow) -> PhaseSpec:
        """A stored phase as the catalog reads it (checked against ``[workers]``)."""
        return require_command(spec_from_row(row), self.config.workers)

    def close(self) -> None:
        if self._readonly is not None:
            self._readonly.close()
        self.db.close()


def ctx(request: Request) -> WebContext:
    context: WebContext = request.app.state.ctx
    return context
