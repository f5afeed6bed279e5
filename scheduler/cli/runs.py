"""Commands that run and inspect executions: run, trigger, status, history, logs."""

from __future__ import annotations

import csv
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from scheduler.cli import logview
from scheduler.cli.common import (
    App,
    ExitCode,
    config_option,
    file_option,
    find_phase,
    json_option,
    open_app,
    open_reader,
    option_time,
    out_console,
    parse_meta,
    print_broken,
    print_json,
    read_workflows,
    runnable_phase,
    short_time,
)
from scheduler.clock import SystemClock
from scheduler.errors import TaskNotFound
from scheduler.store import browse, history, lease
from scheduler.store.browse import EXPORT_CAP, RunFilter
from scheduler.store.history import Status, Trigger
from scheduler.store.search import SearchQuery
from scheduler.store.workflows import PhaseRow, file_rows, phase_rows
from scheduler.tasktime import iso

if TYPE_CHECKING:  # the engine loads only for `run` (see scheduler.cli: fast to start)
    from scheduler.engine import Engine, TickReport
    from scheduler.validation import PhaseSpec

_STATUS_COLOURS = {
    "complete": "green",
    "error": "red",
    "alert": "red",
    "warn": "yellow",
    "running": "cyan",
    "queued": "blue",
    "skipped": "dim",
    "cancelled": "magenta",
}


@contextmanager
def _engine(app: App) -> Iterator[Engine]:
    from scheduler.engine import Engine
    from scheduler.executors import Executor, LocalExecutor

    clock = SystemClock()
    if app.config.executor.kind == "celery":
        from scheduler.cli.worker import celery_executor

        executor: Executor = celery_executor(app.config, clock)
    else:
        executor = LocalExecutor.for_config(app.config, clock.now)
    yield Engine(app.config, app.db, executor, clock)


@click.command()
@config_option
@click.option(
    "--once",
    is_flag=True,
    help="One pass: fire what is due now, run everything queued to the end, exit.",
)
@click.option(
    "--standby",
    is_flag=True,
    help="Wait while another scheduler holds the database; take over when it stops beating.",
)
@json_option
def run(config_path: str | None, once: bool, standby: bool, as_json: bool) -> int:
    """Run the scheduler (Ctrl-C stops it cleanly). With --once --json, the summary is JSON.

    With --standby (several hosts, one PostgreSQL database) it waits, saying so, while another
    scheduler holds the lease, and takes over within seconds once that one stops renewing it.
    """
    if once and standby:
        raise click.UsageError("--standby waits to run the daemon; it does not go with --once")
    with open_app(config_path) as app, _engine(app) as engine:
        console = out_console()
        stop = threading.Event()
        if standby and not _stand_by(console, app, engine, stop):
            return ExitCode.OK  # stopped while waiting
        if once:
            quiet = as_json  # stdout carries the JSON summary alone
            with _signals(stop, engine):
                report = engine.run_once(
                    on_tick=None if quiet else lambda r: _print_tick(console, r), stop=stop
                )
            return _once_summary(console, report, stop.is_set(), as_json)
        with _signals(stop, engine):
            engine.run_forever(
                stop,
                on_tick=lambda r: _print_tick(console, r),
                on_start=lambda: _banner(console, app, engine),
            )
    return ExitCode.OK


def _stand_by(console: Console, app: App, engine: Engine, stop: threading.Event) -> bool:
    """Wait for the lease (True once this process holds it; False when stopped meanwhile)."""
    from scheduler import standby

    def waiting(holder: lease.Holder) -> None:
        console.print(
            f"standing by: pid {holder.pid} on {holder.host} runs this database "
            f"({app.db.display_url()}); taking over when it stops",
            highlight=False,
            markup=False,
        )

    with _signals(stop, engine):
        return standby.wait_for_lease(app.db, engine.clock.now, stop, on_wait=waiting)


def _banner(console: Console, app: App, engine: Engine) -> None:
    """What the daemon runs on: database (password hidden), folder, phases, the next fire."""
    seen = engine.overview(datetime.now(UTC))
    errors = f", {seen.phase_errors} with errors" if seen.phase_errors else ""
    broken = f"; {seen.file_errors} files do not load" if seen.file_errors else ""
    if seen.next_fire is not None:
        when, task = seen.next_fire
        upcoming = f"next fire {task} at {short_time(iso(when))} UTC"
    else:
        upcoming = "no cron fire ahead"
    console.print(
        f"tomlflow running on database {app.db.display_url()}, workflows "
        f"{app.config.workflows}: {seen.phases} phases loaded{errors}{broken}; {upcoming} "
        "(Ctrl-C stops)",
        highlight=False,
        markup=False,
    )


def _once_summary(console: Console, report: TickReport, interrupted: bool, as_json: bool) -> int:
    """Print what a ``run --once`` did; exit 130 when interrupted, 1 when a run failed."""
    if as_json:
        print_json(
            {
                "fired": report.fired,
                "started": report.started,
                "finished": report.finished,
                "failed": report.failed,
                "statuses": dict(sorted(report.statuses.items())),
                "interrupted": interrupted,
            }
        )
    else:
        summary = ", ".join(f"{n} {s}" for s, n in sorted(report.statuses.items()))
        cut = "; interrupted: what still ran is cancelled and queued again" if interrupted else ""
        console.print(
            f"ran {report.finished} executions: {summary or 'nothing due'}{cut}", highlight=False
        )
    if interrupted:
        return ExitCode.INTERRUPTED
    return ExitCode.FAILED if report.failed else ExitCode.OK


def _print_tick(console: Console, report: TickReport) -> None:
    """One line per cron fire and per ended execution, as they happen."""
    clock = datetime.now(UTC).strftime("%H:%M:%S")
    for row in report.fires:
        when = iso(row.task_time)[:16] if row.task_time else "-"
        console.print(
            f"{clock} [blue]{'fired':<8}[/] {_escape(row.task)} for {when}", highlight=False
        )
    for execution, finish in report.ended:
        seconds = (finish.ended_at - finish.started_at).total_seconds()
        label = _colour(finish.status.value, width=8)
        msg = f": {_escape(finish.msg)}" if finish.msg else ""
        console.print(
            f"{clock} {label:<8} {_escape(execution.task)} #{execution.id} ({seconds:.2f}s){msg}",
            highlight=False,
        )


@contextmanager
def _signals(stop: threading.Event, engine: Engine) -> Iterator[None]:
    """SIGINT/SIGTERM stop the loop; SIGHUP asks for a refresh of the workflow files."""

    def on_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        engine.refresh_requested.set()

    previous = {
        sig: signal.signal(sig, handler)
        for sig, handler in (
            (signal.SIGINT, on_stop),
            (signal.SIGTERM, on_stop),
            (signal.SIGHUP, on_hup),
        )
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@click.argument("task")
@click.option(
    "--at", "at", metavar="TIME", help="Task time: 2024-01-02, 2024-01-02T13 or RFC 3339."
)
@click.option("--meta", "metas", multiple=True, metavar="KEY=VALUE", help="Meta for the task.")
@file_option
@config_option
@json_option
def trigger(
    task: str,
    at: str | None,
    metas: tuple[str, ...],
    file_path: str | None,
    config_path: str | None,
    as_json: bool,
) -> int:
    """Queue one manual run of TASK (topic or topic:job); `run` executes it."""
    from scheduler import planner

    task_time = option_time(at, "--at") or datetime.now(UTC)
    meta = parse_meta(metas)
    with open_app(config_path) as app:
        spec = runnable_phase(find_phase(app, task, file_path))
        now = datetime.now(UTC)
        rows = planner.new_rows(
            spec,
            task_time,
            planner.base_meta(spec, meta),
            Trigger.MANUAL,
            now,
            app.config.workflow_root,
        )
        with app.db.write() as conn:
            ids = history.insert_returning_ids(conn, rows, now)
    queued = [
        {
            "id": execution_id,
            "task": r.task,
            "task_time": iso(r.task_time) if r.task_time else None,
            "info": r.info,
            "task_id": r.task_id,
        }
        for execution_id, r in zip(ids, rows, strict=True)
    ]
    if as_json:
        # "id" is the execution queued; a batch rule queues several, all in "ids".
        print_json({"id": ids[0] if ids else None, "ids": ids, "executions": queued})
        return ExitCode.OK
    for item in queued:
        out_console().print(
            f"queued execution {item['id']}: {item['task']} for {item['task_time'] or '-'}: "
            f"{item['info']}",
            highlight=False,
            markup=False,
        )
    return ExitCode.OK


@click.command()
@config_option
@json_option
def status(config_path: str | None, as_json: bool) -> int:
    """One line per phase, as the scheduler last loaded the workflow files: last result, when,
    and the next cron fire; then whether a scheduler is running on the database, and each
    workflow file that does not load. Reads only (see `refresh` to reload the files)."""
    with open_reader(config_path) as reader, reader.db.read() as conn:
        stored = phase_rows(conn)
        broken = {key: row.error for key, row in file_rows(conn).items() if row.error}
        latest = history.latest_by_phase(conn)
        states = history.phase_states(conn)
        holder = lease.current(conn)
    now = datetime.now(UTC)
    running = holder is not None and not holder.is_gone(now)
    rows: list[dict[str, Any]] = []
    for phase in stored:
        key = (phase.file_path, phase.task)
        last, state = latest.get(key), states.get(key)
        rows.append(
            {
                "file_path": phase.file_path,
                "task": phase.task,
                "valid": phase.status or "ok",
                "paused": bool(state and state.paused),
                "last_status": last.status.value if last else None,
                "last_task_time": iso(last.task_time) if last and last.task_time else None,
                "last_ended_at": iso(last.ended_at) if last and last.ended_at else None,
                "next_fire": _next_fire(phase, state, reader.config.timezone, now),
            }
        )
    scheduler = _scheduler_json(holder, running, now)
    if as_json:
        print_json({"scheduler": scheduler, "phases": rows,
                    "broken_files": [{"file_path": k, "error": v} for k, v in broken.items()]})
        return ExitCode.OK
    table = Table("file", "task", "last", "task time", "ended", "next fire", "paused", box=None)
    for r in rows:
        table.add_row(
            r["file_path"],
            r["task"],
            _colour(r["last_status"] or "-"),
            short_time(r["last_task_time"]),
            short_time(r["last_ended_at"]),
            _next_fire_text(r["next_fire"], running, now),
            "yes" if r["paused"] else "",
        )
    out_console().print(table)
    out_console().print(_scheduler_line(holder, running, now), highlight=False, markup=False)
    print_broken(broken)
    return ExitCode.OK


def _scheduler_json(holder: lease.Holder | None, running: bool, now: datetime) -> dict[str, Any]:
    if holder is None:
        return {"running": False}
    return {
        "running": running,
        "host": holder.host,
        "pid": holder.pid,
        "since": iso(holder.since),
        "heartbeat": iso(holder.heartbeat),
        "heartbeat_age_seconds": round((now - holder.heartbeat).total_seconds(), 1),
    }


def _scheduler_line(holder: lease.Holder | None, running: bool, now: datetime) -> str:
    """Who runs the schedule: the lease's holder and heartbeat age, or that nobody does."""
    if holder is not None:
        age = f"{max(0, round((now - holder.heartbeat).total_seconds()))}s ago"
        who = f"pid {holder.pid} on {holder.host}, heartbeat {age}"
        if running:
            return f"scheduler: running ({who})"
        return f"scheduler: not running (last: {who}); cron fires wait for `tomlflow run`"
    return "scheduler: not running; cron fires wait for `tomlflow run`"


def _next_fire_text(next_fire: str | None, running: bool, now: datetime) -> str:
    # A fire time in the past means nobody is firing: say so instead of showing a stale time.
    if next_fire is not None and not running and next_fire < iso(now):
        return "no scheduler"
    return short_time(next_fire)


@click.command(name="history")
@click.argument("task", required=False)
@click.option("--status", "status_filter", type=click.Choice([s.value for s in Status]))
@click.option("--trigger", "trigger_filter", type=click.Choice([t.value for t in Trigger]))
@file_option
@click.option("--since", metavar="TIME", help="Created at or after: 2024-01-02, …T13, RFC 3339.")
@click.option("--until", metavar="TIME", help="Created before this time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, EXPORT_CAP))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default=None,
    help="table (default), json, or csv (a header row, ISO timestamps).",
)
@config_option
@json_option
def history_cmd(
    task: str | None,
    status_filter: str | None,
    trigger_filter: str | None,
    file_path: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    fmt: str | None,
    config_path: str | None,
    as_json: bool,
) -> int:
    """Executions, newest first, filtered; export them as JSON or CSV (the dashboard's
    Runs page filters and exports with the same query). Exit 2 when TASK is neither a phase
    nor in the history."""
    where = RunFilter(
        task=task,
        file_path=file_path,
        status=Status(status_filter) if status_filter else None,
        trigger=Trigger(trigger_filter) if trigger_filter else None,
        since=option_time(since, "--since"),
        until=option_time(until, "--until"),
    )
    fmt = fmt or ("json" if as_json else "table")
    with open_reader(config_path) as reader:
        with reader.db.read() as conn:
            rows = list(browse.iter_runs(conn, where, cap=limit))
        if task and not rows and not _is_phase(task, read_workflows(reader.config).specs):
            raise TaskNotFound(task)
    if fmt == "json":
        print_json([browse.export_row(r) for r in rows])
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=browse.EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(browse.export_row(r) for r in rows)
    else:
        _history_table(rows)
    return ExitCode.OK


def _history_table(rows: list[history.Execution]) -> None:
    table = Table("id", "task", "task time", "trigger", "try", "status", "started", "msg", box=None)
    for r in rows:
        table.add_row(
            str(r.id),
            r.task,
            short_time(iso(r.task_time) if r.task_time else None),
            r.trigger.value,
            str(r.attempt),
            _colour(r.status.value),
            short_time(iso(r.started_at) if r.started_at else None),
            _escape(r.msg),
        )
    out_console().print(table)


@click.command()
@click.argument("target", required=False, metavar="ID|TASK")
@click.option("--follow", "-f", is_flag=True, help="Print new lines as they arrive, to the end.")
@click.option("--tail", type=click.IntRange(1), metavar="N", help="Only the last N lines.")
@click.option("--search", "words", metavar="TEXT", help="Search all stored output for words.")
@click.option("--since", metavar="TIME", help="--search: lines from TIME (or a duration ago).")
@click.option("--until", metavar="TIME", help="--search: lines before TIME.")
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="--search: at most this many lines, newest first.",
)
@config_option
@json_option
def logs(
    target: str | None,
    follow: bool,
    tail: int | None,
    words: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    config_path: str | None,
    as_json: bool,
) -> int:
    """The output lines of execution ID; with --search, matching lines of all (or TASK's) runs.

    --follow exits when the execution ends: 0 when it completed, 1 otherwise.
    """
    if words is not None:
        now = datetime.now(UTC)
        query = SearchQuery(
            words,
            target,
            logview.since_option(since, "--since", now),
            logview.since_option(until, "--until", now),
            limit,
        )
        with open_reader(config_path) as reader:
            logview.run_search(reader.db, query, as_json)
        return ExitCode.OK
    if since is not None or until is not None:
        raise click.UsageError("--since and --until go with --search")
    if target is None or not target.isdigit():
        raise click.UsageError("give an execution ID (or --search TEXT)")
    with open_reader(config_path) as reader:
        return logview.show(reader.db, int(target), follow, tail, as_json)


def _is_phase(task: str, specs: list[PhaseSpec]) -> bool:
    return any(task in (s.task, s.topic) for s in specs)


def _next_fire(
    phase: PhaseRow, state: history.PhaseState | None, default_tz: str, now: datetime
) -> str | None:
    """The stored next fire; for a cron phase no scheduler has seen yet, the one from now."""
    from zoneinfo import ZoneInfo

    from scheduler import timing
    from scheduler.errors import RuleError
    from scheduler.rules import parse_rule

    if state is not None and state.next_fire is not None:
        return iso(state.next_fire)
    if phase.severity == "error":
        return None
    try:
        rule = parse_rule(phase.rule)
    except RuleError:
        return None
    if rule.cron is None:
        return None
    return iso(timing.next_fire(rule.cron, ZoneInfo(rule.tz or default_tz), now))


def _colour(status_text: str, width: int = 0) -> str:
    colour = _STATUS_COLOURS.get(status_text)
    padded = status_text.ljust(width)
    return f"[{colour}]{padded}[/]" if colour else padded


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


COMMANDS = [run, trigger, status, history_cmd, logs]
