"""What ``tomlflow logs`` does beyond printing one execution: follow it, and search all output."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scheduler.cli.common import ExitCode, option_time, out_console, print_json, short_time
from scheduler.durations import parse_duration
from scheduler.errors import DurationError, TomlflowError
from scheduler.store import history, search
from scheduler.store.db import Database
from scheduler.store.history import FINISHED, Status
from scheduler.store.search import Hit, Line, SearchQuery
from scheduler.tasktime import iso

POLL_SECONDS = 0.5  # how often --follow looks for new lines; the engine stores them in batches
Sleep = Callable[[float], None]


def follow_lines(
    db: Database,
    execution_id: int,
    emit: Callable[[Line], None],
    after: int = 0,
    sleep: Sleep | None = None,
) -> Status:
    """Emit the lines of ``execution_id`` with a seq above ``after`` as they are stored, until
    it ends; return its final status. Polls every POLL_SECONDS while nothing new arrived
    (``time.sleep`` counts on the monotonic clock). Raises TomlflowError if the row vanishes."""
    seq, pause = after, sleep or _sleep
    while True:
        with db.read() as conn:
            # Status first: the lines an end writes commit with it, so once the status read
            # says finished, the lines read after it are all there are.
            status = search.execution_status(conn, execution_id)
            lines = search.lines_after(conn, execution_id, seq)
        if status is None:
            raise TomlflowError(f"execution {execution_id} no longer exists")
        for line in lines:
            emit(line)
        seq = lines[-1].seq if lines else seq
        if Status(status) in FINISHED and not lines:
            return Status(status)
        if not lines:
            pause(POLL_SECONDS)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # a name of our own, so that a test can stand in for the wait


def show(db: Database, execution_id: int, follow: bool, tail: int | None, as_json: bool) -> int:
    """Print one execution's lines (the last ``tail``), and with ``follow`` the ones still to
    come; the exit code is 0 unless following ended in anything but ``complete``."""
    with db.read() as conn:
        execution = history.get_execution(conn, execution_id)
        if execution is None:
            raise TomlflowError(f"no execution with id {execution_id}")
        lines = (
            search.last_lines(conn, execution_id, tail)
            if tail
            else search.lines_after(conn, execution_id, 0, None)
        )
    if as_json and not follow:
        print_json({"execution": execution.as_dict(), "logs": [x.as_dict() for x in lines]})
        return ExitCode.OK
    console = out_console()
    if not as_json:
        console.print(
            f"# {execution.task} attempt {execution.attempt}: {execution.status.value} "
            f"{execution.msg}",
            highlight=False,
            markup=False,
        )
    # --follow --json prints one JSON object per line, so a reader can stream them.
    emit = (lambda x: click.echo(json.dumps(x.as_dict()))) if as_json else _line_printer(console)
    for x in lines:
        emit(x)
    if not follow:
        return ExitCode.OK
    final = follow_lines(db, execution_id, emit, lines[-1].seq if lines else 0)
    if not as_json:
        console.print(f"# ended: {final.value}", highlight=False, markup=False)
    return ExitCode.OK if final is Status.COMPLETE else ExitCode.FAILED


def _line_printer(console: Console) -> Callable[[Line], None]:
    def emit(x: Line) -> None:
        style = "red" if x.stream == "stderr" else "dim" if x.stream == "system" else None
        console.print(x.line, style=style, highlight=False, markup=False)

    return emit


def since_option(text: str | None, option: str, now: datetime) -> datetime | None:
    """``--since``/``--until``: a time (2024-01-02, …T13, RFC 3339) or a duration back from now
    (``2h``, ``7d``)."""
    if text is None:
        return None
    try:
        return now - abs(parse_duration(text))
    except DurationError:
        return option_time(text, option)


def run_search(db: Database, query: SearchQuery, as_json: bool) -> None:
    """Print the lines matching ``query``: execution id, task, task time, timestamp, line."""
    try:
        with db.read() as conn:
            hits = search.search(conn, query)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--search") from None
    if as_json:
        print_json([hit.as_dict() for hit in hits])
    elif hits:
        out_console().print(_hits_table(hits))
    else:
        out_console().print(f"no stored line holds: {query.words}", highlight=False, markup=False)


def _hits_table(hits: list[Hit]) -> Table:
    table = Table("id", "task", "task time", "timestamp", "line", box=None)
    for hit in hits:
        table.add_row(
            str(hit.execution_id),
            Text(hit.task),  # Text: output is data, never rich markup
            short_time(iso(hit.task_time) if hit.task_time else None),
            short_time(iso(hit.ts)),
            Text(hit.line),
        )
    return table
