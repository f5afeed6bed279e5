"""Commands that run and inspect executions: run, trigger, status, history, logs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from scheduler import planner, timing
from scheduler.cli.common import (
    App,
    ExitCode,
    config_option,
    file_option,
    find_phase,
    json_option,
    open_app,
    option_time,
    out_console,
    print_json,
    runnable_phase,
    short_time,
)
from scheduler.cli.worker import celery_executor
from scheduler.clock import SystemClock
from scheduler.engine import Engine, TickReport
from scheduler.errors import TomlflowError
from scheduler.executors import Executor, LocalExecutor
from scheduler.store import history
from scheduler.store.history import Status, Trigger
from scheduler.tasktime import iso
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
    clock = SystemClock()
    if app.config.executor.kind == "celery":
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
def run(config_path: str | None, once: bool) -> int:
    """Run the scheduler (Ctrl-C stops it cleanly)."""
    with open_app(config_path) as app, _engine(app) as engine:
        console = out_console()
        if once:
            report = engine.run_once(on_tick=lambda r: _print_tick(console, r))
            summary = ", ".join(f"{n} {s}" for s, n in sorted(report.statuses.items()))
            console.print(
                f"ran {report.finished} executions: {summary or 'nothing due'}", highlight=False
            )
            return ExitCode.FAILED if report.failed else ExitCode.OK
        stop = threading.Event()
        with _signals(stop, engine):
            console.print(
                f"tomlflow running on {app.config.workflows} (Ctrl-C stops)", highlight=False
            )
            engine.run_forever(stop, on_tick=lambda r: _print_tick(console, r))
    return ExitCode.OK


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
    task_time = option_time(at, "--at") or datetime.now(UTC)
    meta = _parse_meta(metas)
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
            history.insert_executions(conn, rows, now)
    if as_json:
        print_json(
            [
                {
                    "task": r.task,
                    "task_time": iso(r.task_time) if r.task_time else None,
                    "info": r.info,
                    "task_id": r.task_id,
                }
                for r in rows
            ]
        )
    else:
        for row in rows:
            out_console().print(
                f"queued {row.task} for {iso(row.task_time) if row.task_time else '-'}: {row.info}",
                highlight=False,
                markup=False,
            )
    return ExitCode.OK


def _parse_meta(items: tuple[str, ...]) -> dict[str, str]:
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


@click.command()
@config_option
@json_option
def status(config_path: str | None, as_json: bool) -> int:
    """One line per phase: last result, when, and the next cron fire."""
    with open_app(config_path) as app:
        app.catalog.refresh()
        specs = app.catalog.phases()
        with app.db.read() as conn:
            latest = history.latest_by_phase(conn)
            states = history.phase_states(conn)
    rows: list[dict[str, Any]] = []
    for spec in specs:
        key = (spec.file_path, spec.task)
        last, state = latest.get(key), states.get(key)
        rows.append(
            {
                "file_path": spec.file_path,
                "task": spec.task,
                "valid": spec.status or "ok",
                "paused": bool(state and state.paused),
                "last_status": last.status.value if last else None,
                "last_task_time": iso(last.task_time) if last and last.task_time else None,
                "last_ended_at": iso(last.ended_at) if last and last.ended_at else None,
                "next_fire": _next_fire(spec, state, app.config.timezone),
            }
        )
    if as_json:
        print_json(rows)
        return ExitCode.OK
    table = Table("file", "task", "last", "task time", "ended", "next fire", "paused", box=None)
    for r in rows:
        table.add_row(
            r["file_path"],
            r["task"],
            _colour(r["last_status"] or "-"),
            short_time(r["last_task_time"]),
            short_time(r["last_ended_at"]),
            short_time(r["next_fire"]),
            "yes" if r["paused"] else "",
        )
    out_console().print(table)
    return ExitCode.OK


@click.command(name="history")
@click.argument("task", required=False)
@click.option("--status", "status_filter", type=click.Choice([s.value for s in Status]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@config_option
@json_option
def history_cmd(
    task: str | None, status_filter: str | None, limit: int, config_path: str | None, as_json: bool
) -> int:
    """Executions, newest first."""
    with open_app(config_path) as app, app.db.read() as conn:
        rows = history.list_executions(conn, task, status_filter, limit)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return ExitCode.OK
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
    return ExitCode.OK


@click.command()
@click.argument("execution_id", type=int)
@config_option
@json_option
def logs(execution_id: int, config_path: str | None, as_json: bool) -> int:
    """The output lines of one execution."""
    with open_app(config_path) as app, app.db.read() as conn:
        execution = history.get_execution(conn, execution_id)
        if execution is None:
            raise TomlflowError(f"no execution with id {execution_id}")
        lines = history.execution_logs_of(conn, execution_id)
    if as_json:
        print_json(
            {
                "execution": execution.as_dict(),
                "logs": [
                    {"seq": x.seq, "ts": iso(x.ts), "stream": x.stream, "line": x.line}
                    for x in lines
                ],
            }
        )
        return ExitCode.OK
    console = out_console()
    console.print(
        f"# {execution.task} attempt {execution.attempt}: {execution.status.value} {execution.msg}",
        highlight=False,
        markup=False,
    )
    for x in lines:
        style = "red" if x.stream == "stderr" else "dim" if x.stream == "system" else None
        console.print(x.line, style=style, highlight=False, markup=False)
    return ExitCode.OK


def _next_fire(spec: PhaseSpec, state: history.PhaseState | None, default_tz: str) -> str | None:
    """The stored next fire; for a cron phase no scheduler has seen yet, the one from now."""
    if state is not None and state.next_fire is not None:
        return iso(state.next_fire)
    if spec.runnable and spec.rule is not None and spec.rule.cron is not None:
        zone = planner.zone_of(spec, default_tz)
        return iso(timing.next_fire(spec.rule.cron, zone, datetime.now(UTC)))
    return None


def _colour(status_text: str, width: int = 0) -> str:
    colour = _STATUS_COLOURS.get(status_text)
    padded = status_text.ljust(width)
    return f"[{colour}]{padded}[/]" if colour else padded


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


COMMANDS = [run, trigger, status, history_cmd, logs]
