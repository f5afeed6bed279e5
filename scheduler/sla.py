"""Deadlines (rule key ``sla=<duration>``): which scheduled times missed theirs.

A cron phase with ``sla=2h`` promises that the run for each scheduled time t is complete by
t + 2h. When that deadline passes and no execution of the phase for t's task time ended
``complete`` by then (it never fired, is still queued or running, or failed), one alert
``missed deadline: <task> for <task time> (sla 2h)`` of kind ``sla`` is recorded and posted
like any alert. A completion after the deadline does not undo a miss.

The decision (``due``, ``missed``) is pure: phase spec, phase state, completions, ``now``.
``DeadlineCheck`` is the one part with I/O: every CHECK_EVERY it judges the deadlines that
passed since the phase was last checked (kept in ``sla_checks``), so deadlines that passed
while no scheduler ran are judged on the next start, at most LOOKBACK back and CAP times per
phase. A phase's first check only starts the watch, as a new schedule starts at the moment it
is seen: adding ``sla`` to an old phase raises no alerts about its past. Only deadlines at
least SETTLE old are judged, so that a run that ended just before its deadline has been
recorded. A paused phase is not judged (its times do not fire by intent) but
its check moves on, so resuming it raises no alerts for the pause. A batch phase is judged by
the run of its fire's own task time.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler import planner
from scheduler.durations import format_duration
from scheduler.store import deadlines, history
from scheduler.store.alerting import AlertKind
from scheduler.store.db import Database
from scheduler.store.history import NewAlert, PhaseState
from scheduler.tasktime import iso, task_time_for_fire
from scheduler.validation import PhaseSpec

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(seconds=30)
SETTLE = timedelta(minutes=1)
LOOKBACK = timedelta(days=7)
CAP = 1000


@dataclass(frozen=True)
class Miss:
    """One scheduled time whose run was not complete by its deadline."""

    file_path: str
    task: str
    scheduled: datetime
    task_time: datetime
    sla: timedelta

    @property
    def message(self) -> str:
        return (
            f"missed deadline: {self.task} for {iso(self.task_time)} "
            f"(sla {format_duration(self.sla)})"
        )

    def alert(self) -> NewAlert:
        return NewAlert(
            None, "", self.file_path, self.task, self.task_time, AlertKind.SLA, self.message
        )


def watched(spec: PhaseSpec) -> bool:
    """Whether ``spec`` has deadlines: a runnable cron phase with an ``sla``."""
    return bool(spec.runnable and spec.rule and spec.rule.cron and spec.rule.sla)


def due(
    spec: PhaseSpec,
    state: PhaseState,
    checked_until: datetime,
    now: datetime,
    default_tz: str,
) -> list[datetime]:
    """Scheduled times whose deadline fell in (checked_until, now - SETTLE], oldest first.

    Only times after the phase was first seen count (nothing was scheduled before), at most
    LOOKBACK before ``now`` and the CAP most recent. ``spec`` must be ``watched``.
    """
    assert spec.rule is not None and spec.rule.cron is not None and spec.rule.sla is not None
    sla, horizon = spec.rule.sla, now - SETTLE
    since = max(checked_until, now - LOOKBACK)
    low, high = max(since - sla, state.first_seen), horizon - sla
    zone = planner.zone_of(spec, default_tz)
    times: deque[datetime] = deque(maxlen=CAP)
    moment = spec.rule.cron.next_after(low, zone)
    while moment <= high:
        times.append(moment)
        moment = spec.rule.cron.next_after(moment, zone)
    return list(times)


def task_time_of(spec: PhaseSpec, scheduled: datetime) -> datetime:
    assert spec.rule is not None
    return task_time_for_fire(scheduled, spec.rule.offset)


def missed(
    spec: PhaseSpec, scheduled: Sequence[datetime], completed: Mapping[datetime, datetime]
) -> list[Miss]:
    """The ``scheduled`` times whose task time has no completion (task time → earliest end)
    by the deadline."""
    assert spec.rule is not None and spec.rule.sla is not None
    sla, misses = spec.rule.sla, []
    for moment in scheduled:
        task_time = task_time_of(spec, moment)
        ended = completed.get(task_time)
        if ended is None or ended > moment + sla:
            misses.append(Miss(spec.file_path, spec.task, moment, task_time, sla))
    return misses


class DeadlineCheck:
    """Judges deadlines every CHECK_EVERY (the engine calls ``poll`` each tick)."""

    def __init__(self, db: Database, default_tz: str) -> None:
        self.db = db
        self.default_tz = default_tz
        self._next: datetime | None = None

    def poll(self, now: datetime, phases: Callable[[], Sequence[PhaseSpec]]) -> list[Miss]:
        """When due, record (once each) the misses whose deadline passed; returns them."""
        if self._next is not None and now < self._next:
            return []
        self._next = now + CHECK_EVERY
        specs = [s for s in phases() if watched(s)]
        if not specs:
            return []
        misses, until = self._judge(specs, now)
        with self.db.write() as conn:
            new = deadlines.record(conn, [m.alert() for m in misses], until, now)
        if new:
            log.warning("%d missed deadlines: %s", new, "; ".join(m.message for m in misses))
        return misses

    def _judge(
        self, specs: list[PhaseSpec], now: datetime
    ) -> tuple[list[Miss], dict[deadlines.PhaseKey, datetime]]:
        misses: list[Miss] = []
        until: dict[deadlines.PhaseKey, datetime] = {}
        with self.db.read() as conn:
            states, checked = history.phase_states(conn), deadlines.checked(conn)
            for spec in specs:
                key = (spec.file_path, spec.task)
                state = states.get(key)
                if state is None:
                    continue  # never planned: nothing was scheduled yet
                until[key], since = now - SETTLE, checked.get(key)
                if since is None or state.paused:
                    continue  # a first check starts the watch; a paused phase fires nothing
                times = due(spec, state, since, now, self.default_tz)
                task_times = [task_time_of(spec, t) for t in times]
                done = deadlines.completions(conn, spec.file_path, spec.task, task_times)
                misses.extend(missed(spec, times, done))
        return misses, until
