"""The cron step of a tick: which cron phases are due, their schedule states, and the plan of a
coming fire made ahead of its time.

The engine keeps one ``Schedules``. It holds the phases' schedule states as the database has
them (``phase_state``), so it knows without a query when the phases next need a look: a tick
before that costs nothing per phase, however many there are. Shortly before a fire the daemon
may ``prepare`` it: the fires and their rows are built then (template rendering, task ids), and
the tick at the fire time only stores them, if nothing they were built from changed meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler import planner
from scheduler.errors import TomlflowError
from scheduler.store import history
from scheduler.store.history import NewExecution, PhaseState, Status
from scheduler.validation import PhaseSpec

if TYPE_CHECKING:
    from sqlalchemy import Connection

log = logging.getLogger(__name__)

PhaseKey = tuple[str, str]
_ALWAYS = datetime.min.replace(tzinfo=UTC)
REHEARSED = 8  # rows of a prepared fire its rehearsal stores (and rolls back)


@dataclass(frozen=True)
class _Ahead:
    """A plan made for ``at`` from ``cron`` and the states in ``before``; it is what a tick
    from ``at`` until ``until`` would plan, as long as those are unchanged."""

    at: datetime
    until: datetime
    cron: list[PhaseSpec]
    before: dict[PhaseKey, PhaseState]
    planned: list[PhaseState]
    rows: list[NewExecution]
    wake: datetime | None


class Schedules:
    """The schedule states of the cron phases, and when they next need a look."""

    def __init__(self, default_tz: str, workflows: Path) -> None:
        self.tz = default_tz
        self.workflows = workflows
        self.states: dict[PhaseKey, PhaseState] = {}
        # (when a phase next needs planning, the next fire of one not paused); None = unknown.
        self._next: tuple[datetime | None, datetime | None] | None = None
        self._ahead: _Ahead | None = None

    def load(self, states: dict[PhaseKey, PhaseState]) -> None:
        """Take the states the database holds (at start, and after a tick rolled back)."""
        self.states = states
        self.forget()

    def forget(self) -> None:
        """The phases changed (a refresh): look at all of them at the next tick."""
        self._next = None
        self._ahead = None

    def plan(self, conn: Connection, cron: list[PhaseSpec], now: datetime) -> list[NewExecution]:
        """Plan the phases of ``cron`` that are due (saving their states); their fire rows.

        The phases are looked at only when one may be due, and the pause flags read only when
        one is: most ticks plan nothing and cost nothing per phase.
        """
        if self._next is not None and (look := self._next[0]) is not None and now < look:
            return []
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self._fits(ahead, cron, now):
            paused = history.paused_phases(conn)
            if not any(key in paused for key in ahead.before):
                return self._take(conn, ahead)
        due = self._due(cron, now)
        if not due:
            self._next = _next_look(cron, self.states)
            return []
        return self._plan_due(conn, cron, due, now)

    def prepare(self, cron: list[PhaseSpec], at: datetime) -> None:
        """Build ahead the plan a tick at ``at`` would make, when it is plain: every phase due
        then was planned before, is not paused and has no batch (whose items come from files
        read at the fire). Pure: no database."""
        due = self._due(cron, at)
        before: dict[PhaseKey, PhaseState] = {}
        for spec in due:
            state = self.states.get(_key(spec))
            if state is None or state.paused or spec.rule is None or spec.rule.is_batch:
                return
            before[_key(spec)] = state
        after = dict(self.states)
        planned, rows = [], []
        try:
            for spec in due:
                plan = planner.plan_cron(spec, before[_key(spec)], at, self.tz)
                after[_key(spec)] = plan.state
                planned.append(plan.state)
                for fire in plan.fires:
                    rows.extend(planner.rows_for_fire(fire, at, self.workflows))
            for row in rows:
                row.settle()  # its insert values, all but the time it is stored at
        except TomlflowError:
            return  # the tick at the fire records the error
        look, wake = _next_look(cron, after)
        if due and look is not None and look > at:
            self._ahead = _Ahead(at, look, cron, before, planned, rows, wake)

    def rehearse(self, conn: Connection) -> None:
        """Run the prepared fire's statements on a few of its rows, for the caller to roll
        back: after a second asleep their code and the database pages they touch are cold,
        and the fire's own transaction runs several times slower for it."""
        ahead = self._ahead
        if ahead is not None:
            history.paused_phases(conn)
            history.save_phase_states(conn, ahead.planned[:REHEARSED])
            history.insert_claimed(conn, ahead.rows[:REHEARSED], ahead.at)

    def next_fire(self, cron: list[PhaseSpec]) -> datetime | None:
        """The next fire of a phase not paused (a paused one keeps its past fire time: waking
        for it would spin; a tick sees its resume)."""
        if self._next is None:
            self._next = _next_look(cron, self.states)
        return self._next[1]

    def _due(self, cron: list[PhaseSpec], now: datetime) -> list[PhaseSpec]:
        """The phases that need planning at ``now`` (a paused one too, until its flag is read)."""
        states, tz = self.states, self.tz
        return [s for s in cron if _needs_planning(s, states.get(_key(s)), False, now, tz)]

    def _fits(self, ahead: _Ahead, cron: list[PhaseSpec], now: datetime) -> bool:
        unchanged = all(self.states.get(key) is state for key, state in ahead.before.items())
        return ahead.cron is cron and ahead.at <= now < ahead.until and unchanged

    def _take(self, conn: Connection, ahead: _Ahead) -> list[NewExecution]:
        for state in ahead.planned:
            self.states[(state.file_path, state.task)] = state
        history.save_phase_states(conn, ahead.planned)
        self._next = (ahead.until, ahead.wake)
        return ahead.rows

    def _plan_due(
        self, conn: Connection, cron: list[PhaseSpec], due: list[PhaseSpec], now: datetime
    ) -> list[NewExecution]:
        paused = history.paused_phases(conn)
        states = self.states
        rows: list[NewExecution] = []
        planned: list[PhaseState] = []
        for spec in due:
            key = _key(spec)
            state = states.get(key)
            if state is not None and state.paused != (key in paused):
                state = states[key] = replace(state, paused=key in paused)  # the CLI flips it
            if not _needs_planning(spec, state, key in paused, now, self.tz):
                continue
            plan = planner.plan_cron(spec, state, now, self.tz)
            states[key] = plan.state
            planned.append(plan.state)
            for fire in plan.fires:
                rows.extend(self._rows_or_error(fire, now))
        history.save_phase_states(conn, planned)
        self._next = _next_look(cron, states)
        return rows

    def _rows_or_error(self, fire: planner.Fire, now: datetime) -> list[NewExecution]:
        try:
            return planner.rows_for_fire(fire, now, self.workflows)
        except TomlflowError as exc:  # e.g. an unreadable meta-file: record it, fire nothing
            log.error("cannot fire %s: %s", fire.spec.task, exc)
            return [_error_row(fire.spec, now, str(exc))]


def _needs_planning(
    spec: PhaseSpec, state: PhaseState | None, paused: bool, now: datetime, default_tz: str
) -> bool:
    if state is None or state.cron != planner.signature(spec, default_tz):
        return True
    if paused:
        return False
    return state.next_fire is None or state.next_fire <= now


def _next_look(
    cron: list[PhaseSpec], states: dict[PhaseKey, PhaseState]
) -> tuple[datetime | None, datetime | None]:
    """(when a phase of ``cron`` next needs planning, the next fire of one not paused), for
    phases just planned. A phase without a state or next fire needs a look at every tick."""
    look: datetime | None = None
    wake: datetime | None = None
    for spec in cron:
        state = states.get(_key(spec))
        if state is None or state.next_fire is None:
            look = _ALWAYS
            continue
        at = state.next_fire
        look = at if look is None or at < look else look
        if not state.paused and (wake is None or at < wake):
            wake = at
    return look, wake


def _key(spec: PhaseSpec) -> PhaseKey:
    return (spec.file_path, spec.task)


def _error_row(spec: PhaseSpec, now: datetime, msg: str) -> NewExecution:
    return NewExecution(
        task_id="",
        file_path=spec.file_path,
        task=spec.task,
        task_time=None,
        trigger=history.Trigger.CRON,
        info=spec.template,
        meta={},
        not_before=now,
        status=Status.ERROR,
        msg=msg,
    )
