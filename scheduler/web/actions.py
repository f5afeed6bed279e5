"""What the dashboard's buttons and the API's POSTs do, each through the functions the command
line uses (planner, backfill, reruns, catalog). Shared by the HTML forms and the JSON API.

Every write is one short transaction; nothing waits on a scheduler: queued rows are picked
up by ``tomlflow run`` as the command line's are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scheduler import backfill as backfills
from scheduler import planner
from scheduler.catalog import RefreshResult, depends_on_matches
from scheduler.errors import TaskNotFound, TomlflowError
from scheduler.followup import after_end
from scheduler.rules import BatchBy
from scheduler.store import browse, history, reruns
from scheduler.store.history import Cancel, Execution, NewExecution, Status, Trigger
from scheduler.store.reruns import Rerun
from scheduler.store.workflows import phase_rows
from scheduler.validation import PhaseSpec
from scheduler.web.context import WebContext
from scheduler.web.render import BadRequest


def find_spec(context: WebContext, task: str, file_path: str | None) -> PhaseSpec:
    """The phase ``task`` of ``file_path`` (or of the one file that has it).

    Raises TaskNotFound, or BadRequest when several files have it and none is named.
    """
    with context.db.read() as conn:
        files = [file_path] if file_path else browse.files_with_task(conn, task)
        if len(files) > 1:
            raise BadRequest(f"{task!r} is in several files ({', '.join(files)}): add ?file=")
        rows = [r for f in files for r in phase_rows(conn, f) if r.task == task]
    if not rows:
        raise TaskNotFound(task)
    return context.spec(rows[0])


def runnable(spec: PhaseSpec) -> PhaseSpec:
    if not spec.runnable:
        raise TomlflowError(f"{spec.file_path} [{spec.task}]: phase has errors: {spec.status}")
    return spec


def trigger(
    context: WebContext, spec: PhaseSpec, at: datetime | None, meta: dict[str, str]
) -> list[Execution]:
    """Queue one manual run of ``spec`` (as ``tomlflow trigger``); returns the queued rows."""
    runnable(spec)
    now = context.clock.now()
    rows = planner.new_rows(
        spec,
        at or now,
        planner.base_meta(spec, meta),
        Trigger.MANUAL,
        now,
        context.config.workflow_root,
    )
    with context.db.write() as conn:
        history.insert_executions(conn, rows, now)
        return browse.chain_of(conn, rows[0].task_id) if rows else []


def retry(context: WebContext, execution_id: int, downstream: bool) -> Rerun:
    """A new attempt of a finished execution (as ``tomlflow retry [--downstream]``)."""
    with context.db.read() as conn:
        execution = history.get_execution(conn, execution_id)
    if execution is None:
        raise TaskNotFound(f"execution {execution_id}")
    spec = find_spec(context, execution.task, execution.file_path)
    runnable(spec)
    with context.db.write() as conn:
        return reruns.queue_rerun(conn, execution_id, downstream, context.clock.now())


def set_paused(context: WebContext, spec: PhaseSpec, paused: bool) -> bool:
    """Pause or resume the phase's cron (as ``tomlflow pause|resume``); whether it changed."""
    with context.db.write() as conn:
        return reruns.set_paused(conn, spec.file_path, spec.task, paused, context.clock.now())


@dataclass(frozen=True)
class BackfillRequest:
    """flowlord's backload form: a range (or one time), a step, meta rows or a meta-file."""

    spec: PhaseSpec
    start: datetime | None
    end: datetime | None
    at: datetime | None
    by: str | None
    meta: tuple[str, ...]
    meta_file: Path | None


@dataclass(frozen=True)
class BackfillResult:
    spec: PhaseSpec
    by: BatchBy
    rows: list[NewExecution]
    executed: bool


def backfill(context: WebContext, request: BackfillRequest, execute: bool) -> BackfillResult:
    """The rows a backfill yields (as ``tomlflow backfill``); queued only with ``execute``."""
    spec = runnable(request.spec)
    assert spec.rule is not None
    now = context.clock.now()
    low, high = backfills.time_range(request.start, request.end, request.at, now)
    try:
        step = backfills.parse_by(request.by) if request.by else spec.rule.batch_by
        rows = backfills.meta_rows(
            spec, request.meta, request.meta_file, context.config.workflow_root
        )
        planned = backfills.plan(spec, low, high, step, rows, now)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if execute:
        with context.db.write() as conn:
            history.insert_executions(conn, planned, now)
    return BackfillResult(spec, step, planned, execute)


def mark(
    context: WebContext, execution_id: int, status: Status, msg: str, who: str
) -> reruns.Marked:
    """Set a finished (or stuck) execution's result (as ``tomlflow mark``): complete releases
    its children as a real completion would, error queues no retry. Raises TaskNotFound, or
    MarkRefused (a TomlflowError) for a queued execution or one a live scheduler runs."""
    if status not in reruns.MARKABLE:
        raise BadRequest("result: complete or error")
    now = context.clock.now()
    release = _releaser(context, execution_id, now)
    note = f"marked {status.value} by {who}" + (f": {msg}" if msg else "")
    with context.db.write() as conn:
        return reruns.mark(conn, execution_id, status, note, now, release)


def _releaser(context: WebContext, execution_id: int, now: datetime) -> reruns.Release:
    """What a completion of the execution releases, decided as the engine decides it; the
    phases are read before the mark's write transaction, which then only inserts."""
    with context.db.read() as conn:
        execution = history.get_execution(conn, execution_id)
        if execution is None:
            raise TaskNotFound(f"execution {execution_id}")
        siblings = [context.spec(r) for r in phase_rows(conn, execution.file_path)]
    spec = next((s for s in siblings if s.task == execution.task), None)
    children = [s for s in siblings if spec and depends_on_matches(s.depends_on, spec.task)]
    root = context.config.workflow_root

    def release(current: Execution) -> list[NewExecution]:
        return after_end(current, Status.COMPLETE, "", {}, spec, children, now, 0.0, root).rows

    return release


def cancel(context: WebContext, execution_id: int, who: str) -> tuple[Cancel, Execution]:
    """Cancel an execution (as ``tomlflow cancel``): a queued one at once, a running one by
    asking the scheduler running it (it kills the process tree within a second or so).
    Raises TaskNotFound for an unknown id, TomlflowError when it had already ended."""
    with context.db.write() as conn:
        outcome, execution = history.request_cancel(conn, execution_id, context.clock.now(), who)
    if outcome is Cancel.UNKNOWN or execution is None:
        raise TaskNotFound(f"execution {execution_id}")
    if outcome is Cancel.ENDED:
        raise TomlflowError(
            f"execution {execution_id} already ended ({execution.status.value}): nothing to cancel"
        )
    return outcome, execution


def refresh(context: WebContext) -> RefreshResult:
    """Reload changed workflow files now (flowlord's ``/refresh``)."""
    return context.catalog.refresh()
