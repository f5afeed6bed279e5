"""Queued executions → launches: which may start now, and with what command.

The command comes from a ``[workers."topic:job"]`` or ``[workers."topic"]`` table (``{info}`` =
the rendered template, as one argument), else the rendered template is itself the command line.
Without ``shell = true`` the line is split with shlex and run directly, so no value from meta or
a template is ever interpreted by a shell; with it, ``{info}`` and meta values are shell-quoted.
"""

from __future__ import annotations

import functools
import importlib
import shlex
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from scheduler import templates
from scheduler.config import Config
from scheduler.errors import ExecutorError
from scheduler.executors import Launch, Orphan, Reply, Result
from scheduler.store.history import Execution
from scheduler.validation import PhaseSpec

PhaseKey = tuple[str, str]


@dataclass(frozen=True)
class Slots:
    """Room to start executions: overall, and per phase with a ``concurrency`` rule."""

    free: int
    running_per_phase: Mapping[PhaseKey, int]


def select(
    candidates: Iterable[Execution], specs: Mapping[PhaseKey, PhaseSpec], slots: Slots
) -> list[Execution]:
    """Candidates (oldest first) that fit the free slots and their phase's concurrency."""
    chosen: list[Execution] = []
    running = Counter(slots.running_per_phase)
    for execution in candidates:
        if len(chosen) >= slots.free:
            break
        key = (execution.file_path, execution.task)
        spec = specs.get(key)
        limit = spec.rule.concurrency if spec and spec.rule else None
        if limit is not None and running[key] >= limit:
            continue
        running[key] += 1
        chosen.append(execution)
    return chosen


def build_launch(execution: Execution, spec: PhaseSpec, config: Config) -> Launch:
    """Everything the executor needs to run one attempt of ``execution``."""
    assert spec.rule is not None
    worker = config.worker_for(execution.topic, execution.job)
    shell = bool(worker and worker.shell)
    if worker and worker.command:
        command = _with_info(worker.command, execution.info, shell)
    elif shell:
        quoted = {key: shlex.quote(value) for key, value in execution.meta.items()}
        command = templates.render(spec.template, execution.task_time, quoted)
    else:
        command = execution.info
    return Launch(
        callable=python_worker(worker.python) if worker and worker.python else None,
        execution_id=execution.id,
        task_id=execution.task_id,
        topic=execution.topic,
        job=execution.job,
        info=execution.info,
        task_time=execution.task_time,
        attempt=execution.attempt,
        meta=execution.meta,
        command=command,
        shell=shell,
        cwd=str(worker.cwd) if worker and worker.cwd else None,
        env=dict(worker.env) if worker else {},
        timeout=spec.rule.timeout or (worker.timeout if worker else None),
    )


def orphan_of(execution: Execution, spec: PhaseSpec | None, config: Config) -> Orphan:
    """What recovery needs of an execution a stopped scheduler left running: whether a Python
    worker ran it (inside that scheduler) and the timeout it still has."""
    worker = config.worker_for(execution.topic, execution.job)
    rule_timeout = spec.rule.timeout if spec and spec.rule else None
    return Orphan(
        execution_id=execution.id,
        pid=execution.pid,
        started_at=execution.started_at,
        timeout=rule_timeout or (worker.timeout if worker else None),
        in_process=bool(worker and worker.python),
    )


@functools.cache
def python_worker(target: str) -> Callable[[Launch], Result | Reply | None]:
    """Import ``package.module:function``; raises ExecutorError when it cannot be found."""
    module_name, _, attribute = target.partition(":")
    try:
        value: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ExecutorError(f"python worker {target}: {exc}") from None
    if not callable(value):
        raise ExecutorError(f"python worker {target}: not callable")
    return cast(Callable[[Launch], Result | Reply | None], value)


def _with_info(command: str, info: str, shell: bool) -> str | list[str]:
    if shell:
        return command.replace("{info}", shlex.quote(info))
    return [token.replace("{info}", info) for token in shlex.split(command)]
