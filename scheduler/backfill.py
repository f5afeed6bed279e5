"""Backfill (flowlord's backload): the tasks one phase would run over a range of task times.

Pure, but for reading a meta-file. The range is inclusive at both ends and stepped ``by`` hour,
day, week or month; a range that runs backwards (``start`` after ``end``) yields its tasks newest
first, and that is also the order they are queued and run in. Each step yields one task per meta
row (from the command's ``--meta``/``--meta-file``, else the phase rule's ``meta``/``meta-file``),
or one task when there are no rows. Every task is its own chain (``task_id``), as every
backloaded task is in flowlord, so children of one day never mix with another's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scheduler import batch, planner, templates
from scheduler.rules import BatchBy
from scheduler.store.history import NewExecution, Trigger
from scheduler.tasktime import cron_stamp, iso
from scheduler.validation import PhaseSpec

_BY_ALIASES = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month"}


@dataclass(frozen=True)
class MetaRows:
    """The rows a backfill expands over; ``from_file`` marks rows read from a meta-file,
    where an empty file means nothing to do (flowlord's rule), not one task without meta."""

    rows: tuple[dict[str, str], ...] = ()
    from_file: bool = False


def time_range(
    start: datetime | None, end: datetime | None, at: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """flowlord's defaults: ``at`` is a range of one; only one end given → both ends are it;
    nothing given → ``now``."""
    if at is not None:
        return at, at
    if start is not None:
        return start, end if end is not None else start
    if end is not None:
        return end, end
    return now, now


def parse_by(text: str) -> BatchBy:
    """``hour|day|week|month`` (or ``hourly`` …), any case; raises ValueError otherwise."""
    word = text.strip().lower()
    try:
        return BatchBy(_BY_ALIASES.get(word, word))
    except ValueError:
        raise ValueError(f"invalid step {text!r}: expected hour, day, week or month") from None


def parse_meta_options(items: Sequence[str]) -> list[dict[str, str]]:
    """``--meta name=bob,albert --meta start=1111,1120`` → one row per index.

    A repeated key adds values to its list. Raises ValueError for an item that is not
    ``KEY=VALUE[,VALUE...]`` or for lists of different lengths.
    """
    columns: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE[,VALUE...]")
        columns.setdefault(key, []).extend(values.split(","))
    lengths = sorted({len(values) for values in columns.values()})
    if len(lengths) > 1:
        raise ValueError(f"inconsistent lengths in meta: {lengths[0]} != {lengths[-1]}")
    width = lengths[0] if lengths else 0
    return [{key: values[i] for key, values in columns.items()} for i in range(width)]


def meta_rows(
    spec: PhaseSpec, meta: Sequence[str], meta_file: Path | None, workflows: Path
) -> MetaRows:
    """The rows to expand over: the command's ``meta`` or ``meta_file`` when given, else the
    phase rule's (its meta-file relative to its workflow file's folder).

    Raises ValueError when both ``meta`` and ``meta_file`` are given or ``meta`` is malformed,
    WorkflowError when a meta-file cannot be read.
    """
    if meta and meta_file is not None:
        raise ValueError("meta and meta-file both used, use one only")
    if meta:
        return MetaRows(tuple(parse_meta_options(meta)))
    if meta_file is not None:
        return MetaRows(tuple(batch.read_meta_file(meta_file)), from_file=True)
    assert spec.rule is not None
    rows = batch.rows_for(spec.rule, (workflows / spec.file_path).parent)
    return MetaRows(tuple(rows), from_file=bool(spec.rule.meta_file))


def plan(
    spec: PhaseSpec,
    start: datetime,
    end: datetime,
    by: BatchBy,
    rows: MetaRows,
    now: datetime,
) -> list[NewExecution]:
    """The queued rows of a backfill of ``spec`` from ``start`` to ``end``, in run order.

    Each row's meta is the phase's base meta (``workflow``, ``job``), then its meta row, then
    ``cron`` = its task time's hour; its ``info`` is the phase template rendered with both.
    Raises ValueError when the range has more than ``batch.MAX_STEPS`` steps.
    """
    if rows.from_file and not rows.rows:
        return []
    items = batch.expand(batch.time_steps(start, end, by), list(rows.rows))
    return [_row(spec, item, now) for item in items]


def _row(spec: PhaseSpec, item: batch.BatchItem, now: datetime) -> NewExecution:
    meta = {**planner.base_meta(spec), **item.meta, "cron": cron_stamp(item.task_time)}
    return NewExecution(
        task_id=uuid.uuid4().hex,
        file_path=spec.file_path,
        task=spec.task,
        task_time=item.task_time,
        trigger=Trigger.BACKFILL,
        info=templates.render(spec.template, item.task_time, meta),
        meta=meta,
        not_before=now,
    )


def task_json(row: NewExecution) -> dict[str, object]:
    """One planned task as the command line's and the API's JSON show it."""
    return {
        "task_id": row.task_id,
        "task": row.task,
        "task_time": iso(row.task_time) if row.task_time else None,
        "info": row.info,
        "meta": dict(row.meta),
    }
