"""What an execution's end releases: children, a retry, or an alert. Pure.

- ``complete``: every child phase fires with the parent's task time, chain id and meta (the
  parent's meta plus what it emitted); a child whose ``require`` is unmet is recorded skipped.
- ``error``: another attempt while ``retry`` allows, not before ``retry_delay`` (with backoff
  and jitter); after the last one, a ``failed`` alert unless the rule says ``no_alert``.
- ``alert``: an alert at once, no retry. ``warn``: done, but no children (as flowlord).
- ``cancelled`` (a shutdown stopped it, not a user): the same execution is queued again as it
  was, same trigger and attempt, so it uses up none of the phase's ``retry``. A user's cancel
  (msg ``cancelled by user``) releases nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from scheduler.planner import base_meta, new_rows
from scheduler.retry import retry_delay
from scheduler.store.history import (
    USER_CANCEL,
    Execution,
    NewAlert,
    NewExecution,
    Status,
    Trigger,
)
from scheduler.validation import PhaseSpec


@dataclass(frozen=True)
class FollowUp:
    rows: list[NewExecution] = field(default_factory=list)
    alerts: list[NewAlert] = field(default_factory=list)


def missing_requirements(spec: PhaseSpec, meta: Mapping[str, str]) -> list[str]:
    """The ``require`` keys that are empty or absent in ``meta``."""
    assert spec.rule is not None
    return [key for key in spec.rule.require if not meta.get(key)]


def after_end(
    execution: Execution,
    status: Status,
    msg: str,
    emitted: Mapping[str, str],
    spec: PhaseSpec | None,
    children: Sequence[PhaseSpec],
    now: datetime,
    jitter: float,
    workflows: Path,
) -> FollowUp:
    """Decide what ``execution`` ending with ``status`` releases."""
    if spec is None or spec.rule is None:
        return FollowUp()  # the phase is gone since this was queued: nothing follows
    if status is Status.COMPLETE:
        return FollowUp(rows=children_rows(execution, emitted, children, now, workflows))
    if status is Status.ERROR:
        if execution.attempt <= spec.retry:
            return FollowUp(rows=[retry_row(execution, spec, now, jitter)])
        if spec.rule.no_alert:
            return FollowUp()
        return FollowUp(alerts=[_alert(execution, "failed", msg)])
    if status is Status.ALERT:
        return FollowUp(alerts=[_alert(execution, "alert", msg)])
    if status is Status.CANCELLED and msg != USER_CANCEL:
        return FollowUp(rows=[resume_row(execution, now)])
    return FollowUp()


def children_rows(
    parent: Execution,
    emitted: Mapping[str, str],
    children: Sequence[PhaseSpec],
    now: datetime,
    workflows: Path,
) -> list[NewExecution]:
    context = {**parent.meta, **emitted}
    context.pop("retry", None)
    rows: list[NewExecution] = []
    for child in children:
        if not child.runnable:
            continue
        meta = base_meta(child, context)
        missing = missing_requirements(child, context)
        if missing:
            rows.append(_skipped(parent, child, meta, now, missing))
            continue
        rows.extend(
            new_rows(
                child,
                parent.task_time,
                meta,
                Trigger.DEPENDENCY,
                now,
                workflows,
                task_id=parent.task_id,
                parent_execution_id=parent.id,
            )
        )
    return rows


def _skipped(
    parent: Execution, child: PhaseSpec, meta: dict[str, str], now: datetime, missing: list[str]
) -> NewExecution:
    names = ", ".join("{meta:" + key + "}" for key in missing)
    return NewExecution(
        task_id=parent.task_id,
        file_path=child.file_path,
        task=child.task,
        task_time=parent.task_time,
        trigger=Trigger.DEPENDENCY,
        info="",
        meta=meta,
        not_before=now,
        status=Status.SKIPPED,
        msg=f"require not met: {names} empty in parent meta",
        parent_execution_id=parent.id,
    )


def retry_row(execution: Execution, spec: PhaseSpec, now: datetime, jitter: float) -> NewExecution:
    """The next attempt: same chain, task time, command and meta; ``retry`` counts as flowlord's."""
    assert spec.rule is not None
    delay = retry_delay(
        execution.attempt,
        spec.rule.retry_delay,
        spec.rule.retry_backoff,
        spec.rule.retry_max_delay,
        jitter,
    )
    return execution.again(now + delay, meta={**execution.meta, "retry": str(execution.attempt)})


def resume_row(execution: Execution, now: datetime) -> NewExecution:
    """The execution a shutdown cancelled, queued again as what it was: same trigger, attempt,
    chain, task time, meta and parent; no cron fire key (the cancelled row keeps it)."""
    return execution.again(now, attempt=execution.attempt, trigger=execution.trigger)


def _alert(execution: Execution, kind: str, msg: str) -> NewAlert:
    return NewAlert(
        execution_id=execution.id,
        task_id=execution.task_id,
        file_path=execution.file_path,
        task=execution.task,
        task_time=execution.task_time,
        kind=kind,
        msg=msg,
    )
