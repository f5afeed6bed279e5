"""What every handler works with: configuration, database, catalog, clock, and caches."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection
from starlette.requests import Request

from scheduler.catalog import Catalog
from scheduler.clock import Clock
from scheduler.config import Config
from scheduler.store import browse
from scheduler.store.db import Database
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.web.security import Guard

HEAT_DAYS = 90
_HEAT_TTL_S = 300.0


@dataclass
class DayTotals:
    """Executions per day for the heat-map. Past days change only by pruning, so they are
    read once every few minutes; today is always read fresh (a small index range)."""

    days: dict[str, int] = field(default_factory=dict)
    key: str = ""
    read_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, conn: Connection, now: datetime) -> dict[str, int]:
        start, end = browse.window(now, HEAT_DAYS)
        today = end - timedelta(days=1)
        with self.lock:
            stale = time.monotonic() - self.read_at > _HEAT_TTL_S
            if self.key != today.date().isoformat() or stale:
                self.days = browse.daily_totals(conn, start, today)
                self.key, self.read_at = today.date().isoformat(), time.monotonic()
            past = dict(self.days)
        past.update(browse.daily_totals(conn, today, end))
        return past


@dataclass
class WebContext:
    config: Config
    db: Database
    catalog: Catalog
    clock: Clock
    guard: Guard
    started: datetime
    heat: DayTotals = field(default_factory=DayTotals)
    _readonly: ReadOnlyDatabase | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def readonly(self) -> ReadOnlyDatabase:
        """The read-only connection ``tomlflow sql`` uses, opened on first use."""
        with self._lock:
            if self._readonly is None:
                self._readonly = ReadOnlyDatabase(self.config.database)
            return self._readonly

    def close(self) -> None:
        if self._readonly is not None:
            self._readonly.close()
        self.db.close()


def ctx(request: Request) -> WebContext:
    context: WebContext = request.app.state.ctx
    return context
