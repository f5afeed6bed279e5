"""The clock is injected: scheduling decisions take ``now`` from a Clock, never from the system.

A Clock has two readings. ``now()`` is the wall clock: it names the times things are due and is
what gets stored, but an operator or NTP may step it back or forward at any moment. ``monotonic()``
only ever moves forward at the pace of real time: every interval the engine keeps (a poll, a
heartbeat, a refresh) is measured on it, so a wall-clock step can neither stretch a wait into
hours nor make a heartbeat skip.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

SLICE_SECONDS = 1.0  # the longest single sleep: a stop or a queued row waits at most this long


class Clock(Protocol):
    """A source of the current time: wall (aware UTC) and monotonic (seconds, arbitrary origin)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class Every:
    """A period on the monotonic clock: due at the first check, then once per ``period``.

    The engine's recurring chores (idle poll, refresh, heartbeat, folder scan, prune) use it, so
    their pace follows real elapsed time whatever the wall clock does.
    """

    def __init__(self, period: timedelta) -> None:
        self.period = period.total_seconds()
        self._next: float | None = None

    def due(self, mono: float) -> bool:
        """Whether the period has passed (always true before the first ``restart``)."""
        return self._next is None or mono >= self._next

    def restart(self, mono: float) -> None:
        """Start a new period at ``mono``."""
        self._next = mono + self.period

    def take(self, mono: float) -> bool:
        """When due, restart the period and return True; otherwise False."""
        if not self.due(mono):
            return False
        self.restart(mono)
        return True

    def left(self, mono: float) -> float:
        """Seconds until due (0 when due)."""
        return 0.0 if self._next is None else max(0.0, self._next - mono)
