"""Batches: one task per time step and per meta row, as flowlord's batch rules and backload do.

``for``/``by`` give the time steps (inclusive at both ends; a range that runs backwards is
produced newest first); ``meta`` or ``meta-file`` give rows, one task each per step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from scheduler.errors import WorkflowError
from scheduler.rules import BatchBy, Rule

MAX_STEPS = 100_000


@dataclass(frozen=True)
class BatchItem:
    """One task of a batch: its time and the meta its row adds (empty without rows)."""

    task_time: datetime
    meta: dict[str, str]


def step(moment: datetime, by: BatchBy) -> datetime:
    """The next step after ``moment``; months roll over as calendar months (Jan 31 → Mar 2/3)."""
    if by is BatchBy.HOUR:
        return moment + timedelta(hours=1)
    if by is BatchBy.WEEK:
        return moment + timedelta(days=7)
    if by is BatchBy.MONTH:
        year, month = divmod(moment.month, 12)
        first = moment.replace(year=moment.year + year, month=month + 1, day=1)
        return first + timedelta(days=moment.day - 1)
    return moment + timedelta(days=1)


def time_steps(start: datetime, end: datetime, by: BatchBy) -> list[datetime]:
    """Every step from ``start`` to ``end`` inclusive; newest first when ``end`` < ``start``."""
    backwards = end < start
    low, high = (end, start) if backwards else (start, end)
    times = []
    moment = low
    while moment <= high:
        times.append(moment)
        if len(times) > MAX_STEPS:
            raise ValueError(f"more than {MAX_STEPS} steps from {start} to {end} by {by.value}")
        moment = step(moment, by)
    return times[::-1] if backwards else times


def read_meta_file(path: Path) -> list[dict[str, str]]:
    """A JSON-lines file: one object per non-blank line, values turned into strings."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WorkflowError(str(path), f"cannot read meta-file: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkflowError(str(path), f"line {number}: invalid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise WorkflowError(str(path), f"line {number}: expected a JSON object")
        rows.append({str(k): _text(v) for k, v in value.items()})
    return rows


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def rows_for(rule: Rule, base: Path) -> list[dict[str, str]]:
    """The rule's meta rows: from ``meta``, or from ``meta-file`` (see ``meta_file_path``)."""
    if rule.meta_file:
        return read_meta_file(meta_file_path(rule.meta_file, base))
    return rule.meta_rows()


def meta_file_path(name: str, base: Path) -> Path:
    """Where a rule's ``meta-file`` is: a relative path beside the workflow file (``base``) if
    there is a file there, else from the working directory (where flowlord looks).

    Raises WorkflowError naming every path tried when there is none.
    """
    path = Path(name)
    # (base / path is path itself when path is absolute; a set keeps one of equal places)
    tried = list(dict.fromkeys([base / path, Path.cwd() / path]))
    for candidate in tried:
        if candidate.is_file():
            return candidate
    places = " nor ".join(str(p) for p in tried)
    raise WorkflowError(name, f"cannot read meta-file: no file at {places}")


def expand(times: list[datetime], rows: list[dict[str, str]]) -> list[BatchItem]:
    """Time-major: for each time, one item per row (or one item when there are no rows)."""
    if not rows:
        return [BatchItem(t, {}) for t in times]
    return [BatchItem(t, dict(row)) for t in times for row in rows]


def for_rule(rule: Rule, task_time: datetime, base: Path) -> list[BatchItem]:
    """The items a batch rule yields at ``task_time`` (one item when it is no batch)."""
    if not rule.is_batch:
        return [BatchItem(task_time, {})]
    end = task_time + rule.batch_for if rule.batch_for is not None else task_time
    rows = rows_for(rule, base)
    if rule.meta_file and not rows:
        return []  # an empty meta-file means nothing to do, as in flowlord
    return expand(time_steps(task_time, end, rule.batch_by), rows)
