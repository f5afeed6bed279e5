"""File triggers: a reported file fires every phase whose rule has a matching ``files=GLOB``.

Globs follow Go's ``filepath.Match``, as flowlord does (scheduler/globs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from scheduler import planner
from scheduler.errors import TomlflowError
from scheduler.globs import match
from scheduler.store.history import NewExecution, Status, Trigger
from scheduler.tasktime import time_from_text
from scheduler.validation import PhaseSpec

log = logging.getLogger(__name__)


def matching(specs: Iterable[PhaseSpec], path: str) -> list[PhaseSpec]:
    """The runnable phases whose ``files`` glob matches ``path``."""
    return [
        spec
        for spec in specs
        if spec.runnable and spec.rule is not None and spec.rule.files
        and match(spec.rule.files, path)
    ]  # fmt: skip


def rows_for_file(
    specs: Iterable[PhaseSpec], path: str, now: datetime, workflows: Path
) -> list[NewExecution]:
    """Queued rows (trigger ``file``) for every phase whose glob matches ``path``.

    Each matching phase fires once (or once per batch item, for a batch rule), with the task time
    found in the path (``tasktime.time_from_text``; ``now`` when it names none) and meta
    ``workflow``, ``job`` (when the phase has one), ``file`` (the path as given) and
    ``filename`` (its last part). A phase that cannot fire (an unreadable meta-file) gets an
    error row saying why instead, so the others still fire. An empty list means no match.
    """
    task_time = time_from_text(path) or now
    extra = {"file": path, "filename": path.rstrip("/").rsplit("/", 1)[-1]}
    rows: list[NewExecution] = []
    for spec in matching(specs, path):
        meta = {**planner.base_meta(spec), **extra}
        try:
            rows.extend(planner.new_rows(spec, task_time, meta, Trigger.FILE, now, workflows))
        except TomlflowError as exc:
            log.error("cannot fire %s for %s: %s", spec.task, path, exc)
            rows.append(_error_row(spec, task_time, meta, now, str(exc)))
    return rows


def _error_row(
    spec: PhaseSpec, task_time: datetime, meta: dict[str, str], now: datetime, msg: str
) -> NewExecution:
    return NewExecution(
        task_id="",
        file_path=spec.file_path,
        task=spec.task,
        task_time=task_time,
        trigger=Trigger.FILE,
        info=spec.template,
        meta=meta,
        not_before=now,
        status=Status.ERROR,
        msg=msg,
    )
