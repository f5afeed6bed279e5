"""File triggers: a reported file fires every phase whose rule has a matching ``files=GLOB``.

Globs follow Go's ``filepath.Match``, as flowlord does: ``*`` is any run of characters other
than ``/``, ``?`` one character other than ``/``, ``[abc]``, ``[a-z]`` and ``[^a-z]`` are classes
(a class may match ``/``), ``\\`` escapes the next character, and the pattern must match the whole
path. There is no ``**``. A URL's scheme is matched literally: ``gs://*/*/*.txt`` matches
``gs://bucket/path/file.txt``. A malformed pattern (an unclosed ``[``, a trailing ``\\``) matches
nothing. (Python's fnmatch is not used: its ``*`` crosses ``/``.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from scheduler import planner
from scheduler.errors import TomlflowError
from scheduler.store.history import NewExecution, Status, Trigger
from scheduler.tasktime import time_from_text
from scheduler.validation import PhaseSpec

log = logging.getLogger(__name__)

_NEVER = "(?!)"


def match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches the glob ``pattern`` in full (Go ``filepath.Match`` rules)."""
    regex = _compile(pattern)
    return regex is not None and regex.fullmatch(path) is not None


def check(pattern: str) -> str | None:
    """Why ``pattern`` is malformed, or None when it is a usable glob."""
    try:
        _translate(pattern)
    except ValueError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(_translate(pattern), re.DOTALL)
    except ValueError:
        return None


def _translate(pattern: str) -> str:
    """The regular expression for a glob; raises ValueError for a malformed one."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            text, i = _class(pattern, i + 1)
            out.append(text)
            continue
        elif char == "\\":
            if i + 1 == len(pattern):
                raise ValueError(f"bad glob {pattern!r}: trailing \\")
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``i``; returns it and the index after ``]``."""
    negated = i < len(pattern) and pattern[i] == "^"
    i += negated
    ranges: list[str] = []
    count = 0
    while True:
        if i < len(pattern) and pattern[i] == "]" and count > 0:
            break
        low, i = _class_char(pattern, i)
        high = low
        if i < len(pattern) and pattern[i] == "-":
            high, i = _class_char(pattern, i + 1)
        if low <= high:  # Go accepts a reversed range that matches nothing
            ranges.append(f"{re.escape(low)}-{re.escape(high)}")
        count += 1
    if not ranges:
        return ("(?s:.)" if negated else _NEVER), i + 1
    return f"[{'^' if negated else ''}{''.join(ranges)}]", i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character of a class; ``-`` and ``]`` must be escaped there."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise ValueError(f"bad glob {pattern!r}: malformed [ class")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError(f"bad glob {pattern!r}: trailing \\")
    return pattern[i], i + 1


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
