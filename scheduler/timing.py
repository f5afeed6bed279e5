"""What is due: scheduled fire times between two evaluations, with a catch-up policy. Pure.

The caller (the engine) keeps ``last_evaluated`` per phase. A phase seen for the first time gets
``last_evaluated`` = the moment it was first seen, so nothing scheduled before that fires (as
with cron). After enqueuing what ``due_times`` returned, the engine advances ``last_evaluated``
to ``now`` and persists it, so each fire time is returned once even across restarts.

Downtime: when several fire times were missed, the policy decides what to fire.

========== ================================================================================
``latest`` only the most recent missed time (the default).
``all``    every missed time, oldest first; at most ``cap``, keeping the most recent ones.
``none``   only a time that is on time: the most recent one if it is at most ``grace``
           before ``now``, otherwise nothing.
========== ================================================================================

A single due time within ``grace`` of ``now`` (the normal case: the engine ticks often) is
returned by every policy. A single due time that is late is returned by ``latest`` and ``all``
and dropped by ``none``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from scheduler.cron import CronSchedule

DEFAULT_GRACE = timedelta(minutes=1)
DEFAULT_CAP = 1000


class Catchup(StrEnum):
    """What to fire when more than one scheduled time was missed."""

    LATEST = "latest"
    ALL = "all"
    NONE = "none"


def next_fire(schedule: CronSchedule, tz: ZoneInfo, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware UTC); see ``CronSchedule.next_after``."""
    return schedule.next_after(after, tz)


def due_times(
    schedule: CronSchedule,
    tz: ZoneInfo,
    last_evaluated: datetime,
    now: datetime,
    catchup: Catchup,
    cap: int = DEFAULT_CAP,
    grace: timedelta = DEFAULT_GRACE,
) -> list[datetime]:
    """Fire times t with ``last_evaluated < t <= now`` to act on, oldest first, aware UTC.

    Which of them are returned depends on ``catchup`` (module docstring). When nothing is due
    this costs one next-fire computation. Raises ValueError for naive datetimes or ``cap < 1``.
    """
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    if now.utcoffset() is None:
        raise ValueError(f"naive datetime: {now!r}")
    first = schedule.next_after(last_evaluated, tz)
    if first > now:
        return []
    if schedule.next_after(first, tz) > now:  # the common case: exactly one due
        recent = [first]
    else:
        recent = _most_recent(
            schedule, tz, last_evaluated, now, cap if catchup == Catchup.ALL else 1
        )
    if catchup == Catchup.NONE and now - recent[-1] > grace:
        return []
    return recent


def _most_recent(
    schedule: CronSchedule, tz: ZoneInfo, low: datetime, now: datetime, count: int
) -> list[datetime]:
    """The last ``count`` fire times in (low, now], oldest first; at least one must exist.

    Looks back over a window that doubles until it holds ``count`` fire times or reaches
    ``low``, so the cost follows ``count``, not the length of the downtime.
    """
    width = timedelta(seconds=1)
    while True:
        start = max(low, now - width)
        times = _between(schedule, tz, start, now)
        if len(times) >= count or start == low:
            return times[-count:]
        width *= 2


def _between(schedule: CronSchedule, tz: ZoneInfo, low: datetime, high: datetime) -> list[datetime]:
    """Every fire time in (low, high], oldest first."""
    times: list[datetime] = []
    moment = schedule.next_after(low, tz)
    while moment <= high:
        times.append(moment)
        moment = schedule.next_after(moment, tz)
    return times
