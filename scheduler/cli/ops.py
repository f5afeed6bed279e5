"""Day-two commands: backfill, retry, pause, resume, mark, prune, backup, doctor."""

from __future__ import annotations

import getpass
import os
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.text import Text

from scheduler import backfill as backfills
from scheduler import doctor as doctors
from scheduler.cli import confirm
from scheduler.cli.common import (
    App,
    ExitCode,
    config_option,
    err_console,
    file_option,
    find_phase,
    json_option,
    open_app,
    option_time,
    out_console,
    print_json,
    runnable_phase,
)
from scheduler.config import load_config
from scheduler.doctor import Level
from scheduler.durations import parse_duration
from scheduler.errors import DurationError, TomlflowError
from scheduler.followup import after_end
from scheduler.rules import BatchBy
from scheduler.store import backup as backups
from scheduler.store import history, reruns, retention
from scheduler.store.db import Database
from scheduler.store.history import Execution, NewExecution, Status
from scheduler.tasktime import iso
from scheduler.validation import PhaseSpec

QUEUE_CHUNK = 1000  # backfill rows per write transaction


def _by(_ctx: click.Context, _param: click.Parameter, value: str | None) -> BatchBy | None:
    try:
        return backfills.parse_by(value) if value is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


# -- backfill ------------------------------------------------------------------------------------


@click.command()
@click.argument("task")
@click.option(
    "--from", "start", metavar="TIME", help="First task time: 2024-01-02, …T13, RFC 3339."
)
@click.option("--to", "end", metavar="TIME", help="Last task time; before --from = newest first.")
@click.option("--at", metavar="TIME", help="A single task time (sets --from and --to).")
@click.option(
    "--by", callback=_by, metavar="STEP", help="hour|day|week|month (default: the rule's)."
)
@click.option("--meta", "metas", multiple=True, metavar="KEY=V1,V2", help="Meta rows (repeatable).")
@click.option(
    "--meta-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON-lines file, one task per line per time.",
)
@click.option("--execute", is_flag=True, help="Queue the tasks (default: only show them).")
@confirm.yes_option
@file_option
@config_option
@json_option
def backfill(
    task: str,
    start: str | None,
    end: str | None,
    at: str | None,
    by: BatchBy | None,
    metas: tuple[str, ...],
    meta_file: Path | None,
    execute: bool,
    yes: bool,
    file_path: str | None,
    config_path: str | None,
    as_json: bool,
) -> int:
    """Show (or with --execute queue) TASK's runs over a range of task times.

    On a terminal, queueing more than 1,000 runs asks first (--yes does not ask).
    """
    when = (option_time(start, "--from"), option_time(end, "--to"), option_time(at, "--at"))
    now = datetime.now(UTC)
    low, high = backfills.time_range(*when, now)
    with open_app(config_path) as app:
        spec = runnable_phase(find_phase(app, task, file_path))
        assert spec.rule is not None
        step = by or spec.rule.batch_by
        try:
            rows = backfills.meta_rows(spec, metas, meta_file, app.config.workflow_root)
            planned = backfills.plan(spec, low, high, step, rows, now)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if execute and not confirm.go_ahead(
            f"queue {len(planned):,} runs of {spec.task}", len(planned), yes
        ):
            out_console().print("nothing queued", highlight=False)
            return ExitCode.FAILED
        if execute:
            _queue(app, planned, now)
    _report_backfill(spec, step, planned, execute, as_json)
    return ExitCode.OK


def _queue(app: App, planned: list[NewExecution], now: datetime) -> None:
    """Insert in chunks, each its own short transaction, so that a running scheduler is never
    kept waiting long and the progress bar moves. An interrupted backfill keeps the chunks it
    queued (`history --status queued` shows them)."""
    with confirm.progress("queueing", len(planned)) as advance:
        for start in range(0, len(planned), QUEUE_CHUNK):
            chunk = planned[start : start + QUEUE_CHUNK]
            with app.db.write() as conn:
                history.insert_executions(conn, chunk, now)
            advance(len(chunk))


def _report_backfill(
    spec: PhaseSpec, by: BatchBy, planned: list[NewExecution], executed: bool, as_json: bool
) -> None:
    tasks = [backfills.task_json(row) for row in planned]
    if as_json:
        print_json(
            {
                "executed": executed,
                "file_path": spec.file_path,
                "task": spec.task,
                "by": by.value,
                "count": len(tasks),
                "tasks": tasks,
            }
        )
        return
    done = "queued" if executed else "dry run: would queue"
    lines = [f"{done} {len(tasks)} tasks of {spec.file_path} [{spec.task}] by {by.value}"]
    for label, item in (("first", tasks[:1]), ("last", tasks[1:][-1:])):
        lines.extend(f"{label:5} {t['task_time']}  {t['info']}" for t in item)
    if not executed and tasks:
        lines.append("(add --execute to queue them; `tomlflow run` runs them)")
    out_console().print("\n".join(lines), highlight=False, markup=False)



# -- retry, pause, resume -------------------------------------------------------------------------


@click.command()
@click.argument("execution_id", type=int)
@click.option(
    "--downstream",
    is_flag=True,
    help="Also cancel the still-queued runs this execution released (the rerun releases anew).",
)
@config_option
@json_option
def retry(execution_id: int, downstream: bool, config_path: str | None, as_json: bool) -> int:
    """Queue a new attempt of a finished execution (same chain, task time, command, meta).

    When the new attempt completes it releases its children afresh, as every run does;
    --downstream also cancels what the old run released and has not started yet, so that
    nothing runs twice or on stale input. Finished descendants stay as history.
    """
    now = datetime.now(UTC)
    with open_app(config_path) as app:
        app.catalog.refresh()
        with app.db.read() as conn:
            execution = history.get_execution(conn, execution_id)
        if execution is None:
            raise TomlflowError(f"no execution with id {execution_id}")
        spec = app.catalog.get(execution.task, execution.file_path)
        if spec is None:
            raise TomlflowError(f"{execution.file_path} [{execution.task}]: phase no longer exists")
        runnable_phase(spec)
        with app.db.write() as conn:
            rerun = reruns.queue_rerun(conn, execution_id, downstream, now)
    if as_json:
        print_json(
            {
                "execution_id": rerun.execution_id,
                "attempt": rerun.attempt,
                "retry_of": execution_id,
                "cancelled": list(rerun.cancelled),
            }
        )
        return ExitCode.OK
    text = f"queued execution {rerun.execution_id}: {execution.task} attempt {rerun.attempt}"
    if rerun.cancelled:
        text += f"; cancelled queued downstream {', '.join(map(str, rerun.cancelled))}"
    out_console().print(text, highlight=False, markup=False)
    return ExitCode.OK


@click.command()
@click.argument("execution_id", type=int)
@config_option
@json_option
def cancel(execution_id: int, config_path: str | None, as_json: bool) -> int:
    """Cancel an execution: a queued one at once, a running one through the scheduler running
    it (its whole process tree is killed, as a timeout does, within a second or so).

    Recorded cancelled with msg "cancelled by user"; it releases no children and no retry.
    Exit 1 when it had already ended, 2 when there is no such execution.
    """
    with open_app(config_path) as app, app.db.write() as conn:
        outcome, execution = history.request_cancel(
            conn, execution_id, datetime.now(UTC), _who()
        )
    if outcome is history.Cancel.UNKNOWN or execution is None:
        raise TomlflowError(f"no execution with id {execution_id}")
    if as_json:
        print_json({"execution_id": execution_id, "task": execution.task, "cancel": outcome.value})
    else:
        said = {
            history.Cancel.CANCELLED: "cancelled (it was queued)",
            history.Cancel.REQUESTED: "running: the scheduler will cancel it",
            history.Cancel.ENDED: f"already ended ({execution.status.value}): nothing to cancel",
        }[outcome]
        out_console().print(f"execution {execution_id} {execution.task}: {said}", markup=False)
    return ExitCode.FAILED if outcome is history.Cancel.ENDED else ExitCode.OK


def _set_paused(
    task: str, file_path: str | None, config_path: str | None, paused: bool, as_json: bool
) -> int:
    with open_app(config_path) as app:
        spec = find_phase(app, task, file_path)
        with app.db.write() as conn:
            changed = reruns.set_paused(conn, spec.file_path, spec.task, paused, datetime.now(UTC))
    if as_json:
        print_json(
            {"file_path": spec.file_path, "task": spec.task, "paused": paused, "changed": changed}
        )
        return ExitCode.OK
    word = "paused" if paused else "resumed"
    state = word if changed else f"already {word}"
    note = ""
    if paused and not (spec.rule and spec.rule.cron):
        note = " (it has no cron: pause only stops cron fires)"
    out_console().print(
        f"{spec.file_path} [{spec.task}]: {state}{note}", highlight=False, markup=False
    )
    return ExitCode.OK


@click.command()
@click.argument("task")
@file_option
@config_option
@json_option
def pause(task: str, file_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Stop TASK's cron fires until `resume` (trigger, backfill and retry still run it)."""
    return _set_paused(task, file_path, config_path, True, as_json)


@click.command()
@click.argument("task")
@file_option
@config_option
@json_option
def resume(task: str, file_path: str | None, config_path: str | None, as_json: bool) -> int:
    """Let TASK's cron fire again; times missed while paused follow its catchup policy."""
    return _set_paused(task, file_path, config_path, False, as_json)


# -- mark ---------------------------------------------------------------------------------------


@click.command()
@click.argument("execution_id", type=int)
@click.argument("result", type=click.Choice(["complete", "error"]))
@click.option("--msg", default="", help="Why; stored after who marked it.")
@config_option
@json_option
def mark(execution_id: int, result: str, msg: str, config_path: str | None, as_json: bool) -> int:
    """Set a finished (or stuck) execution's result by hand, as Airflow's mark success/failed.

    complete releases its children as a real completion would; error queues no retry. The
    execution's msg says who marked it (visible in `history`).
    """
    status, now = Status(result), datetime.now(UTC)
    note = f"marked {result} by {_who()}" + (f": {msg}" if msg else "")
    with open_app(config_path) as app:
        release = _releaser(app, execution_id, now)
        try:
            with app.db.write() as conn:
                marked = reruns.mark(conn, execution_id, status, note, now, release)
        except reruns.MarkRefused as exc:
            err_console().print(f"error: {exc}", markup=False, highlight=False)
            return ExitCode.FAILED
    if as_json:
        print_json(
            {
                "execution_id": execution_id,
                "status": result,
                "was": marked.before.status.value,
                "changed": marked.changed,
                "released": marked.released,
                "msg": note if marked.changed else marked.before.msg,
            }
        )
        return ExitCode.OK
    text = f"execution {execution_id} ({marked.before.task}): already {result}"
    if marked.changed:
        text = f"execution {execution_id} ({marked.before.task}): {note}"
        text += f"; released {marked.released} child runs" if marked.released else ""
    out_console().print(text, highlight=False, markup=False)
    return ExitCode.OK


def _who() -> str:
    """The OS user running the command (a uid where the system has no name for it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no LOGNAME/USER and no passwd entry, as in some containers
        return f"uid {os.getuid()}"


def _releaser(app: App, execution_id: int, now: datetime) -> reruns.Release:
    """What a completion of the execution releases, decided as the engine decides it. The
    phases are read here, before the mark's write transaction, which then only inserts."""
    app.catalog.refresh()
    with app.db.read() as conn:
        execution = history.get_execution(conn, execution_id)
    if execution is None:
        raise TomlflowError(f"no execution with id {execution_id}")
    spec = app.catalog.get(execution.task, execution.file_path)
    children = app.catalog.children(execution.file_path, execution.task) if spec else []
    workflows = app.config.workflow_root

    def release(current: Execution) -> list[NewExecution]:
        follow = after_end(current, Status.COMPLETE, "", {}, spec, children, now, 0.0, workflows)
        return follow.rows

    return release


# -- prune ----------------------------------------------------------------------------------------


@click.command()
@click.option("--older-than", "older_than", metavar="DURATION", help="e.g. 90d (default: config).")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--batch", default=retention.DEFAULT_BATCH, show_default=True, type=click.IntRange(1))
@confirm.yes_option
@config_option
@json_option
def prune(
    older_than: str | None,
    dry_run: bool,
    batch: int,
    yes: bool,
    config_path: str | None,
    as_json: bool,
) -> int:
    """Delete executions that ended long ago, with their logs and alerts, and old file reports
    (never workflows). On a terminal, deleting more than 1,000 rows asks first (--yes does
    not ask)."""
    with open_app(config_path) as app:
        age = _age(older_than) if older_than else app.config.retention
        if age is None:
            raise click.UsageError("give --older-than (e.g. 90d) or set [retention] executions")
        cutoff = datetime.now(UTC) - age
        counts = retention.count(app.db, cutoff) if dry_run else _prune(app, cutoff, batch, yes)
        if counts is None:
            out_console().print("nothing deleted", highlight=False)
            return ExitCode.FAILED
    if as_json:
        print_json({"dry_run": dry_run, "cutoff": iso(cutoff), **asdict(counts)})
        return ExitCode.OK
    verb = "would delete" if dry_run else "deleted"
    out_console().print(
        f"{verb} {counts.executions} executions, {counts.logs} log lines, "
        f"{counts.alerts} alerts, {counts.file_reports} file reports (before {iso(cutoff)})",
        highlight=False,
    )
    return ExitCode.OK


def _prune(app: App, cutoff: datetime, batch: int, yes: bool) -> retention.PruneCounts | None:
    """Prune with a progress bar, after asking on a terminal when it is large; None when the
    person declined. Rows are counted first only when someone may be asked or shown a bar."""
    total = None
    if confirm.is_terminal():
        total = retention.count(app.db, cutoff).total
        if not confirm.go_ahead(f"delete {total:,} rows (before {iso(cutoff)})", total, yes):
            return None
    with confirm.progress("deleting", total) as advance:
        return retention.prune(app.db, cutoff, batch, advance)


# -- backup --------------------------------------------------------------------------------------


@click.command(name="backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@config_option
@json_option
def backup_cmd(path: Path, config_path: str | None, as_json: bool) -> int:
    """Copy the SQLite database to PATH, consistent while the scheduler runs, verified with
    quick_check, and atomic (PATH holds the old copy or the new one). PostgreSQL: use pg_dump."""
    config = load_config(config_path)
    db = Database(config.database, migrate=False)
    try:
        source = backups.sqlite_file(db)
        if not source.is_file():
            raise TomlflowError(f"no database at {source}: nothing to back up")
        if path.absolute() == source.absolute():
            raise click.BadParameter("is the database itself", param_hint="PATH")
        result = backups.backup(db, path)
    finally:
        db.close()
    if as_json:
        print_json({"path": str(result.path), "bytes": result.bytes, "quick_check": "ok"})
        return ExitCode.OK
    out_console().print(
        f"backed up {source} to {result.path} ({result.bytes:,} bytes, quick_check ok, "
        f"{result.seconds:.1f} s)",
        highlight=False,
        markup=False,
    )
    return ExitCode.OK


# -- doctor --------------------------------------------------------------------------------------

_LEVEL_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "red"}


@click.command()
@config_option
@json_option
def doctor(config_path: str | None, as_json: bool) -> int:
    """One screen of health: database, schema, integrity, WAL, tables, scheduler lease,
    workflow errors, disk, queue. Exits 1 when something needs action (each says what)."""
    report = doctors.examine(load_config(config_path), datetime.now(UTC))
    if as_json:
        print_json(report.as_dict())
        return ExitCode.FAILED if report.needs_action else ExitCode.OK
    console = out_console()
    for f in report.findings:
        line = Text(f"{f.level.value:<5} ", style=_LEVEL_STYLE[f.level])
        line.append(f"{f.check:<14} {f.detail}")
        if f.action:
            line.append(f" → {f.action}", style="bold")
        console.print(line, highlight=False)
    if report.tables:
        sizes = ", ".join(
            f"{t.name} {t.rows:,}" + (f" ({doctors.human(t.bytes)})" if t.bytes else "")
            for t in report.tables
        )
        console.print(Text(f"{'info':<5} {'tables':<14} {sizes}"), highlight=False)
    return ExitCode.FAILED if report.needs_action else ExitCode.OK


def _age(text: str) -> timedelta:
    try:
        age = parse_duration(text)
    except DurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if age.total_seconds() < 0:
        raise click.BadParameter("must not be negative", param_hint="--older-than")
    return age


COMMANDS = [backfill, retry, cancel, pause, resume, mark, prune, backup_cmd, doctor]
