"""Commands that only read: sql, stats, ask, mcp. All of them use the read-only connection."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import click
from rich.table import Table

from scheduler import query
from scheduler.ai.tools import Toolbox
from scheduler.cli.common import (
    ExitCode,
    config_option,
    err_console,
    json_option,
    out_console,
    print_json,
)
from scheduler.clock import SystemClock
from scheduler.config import Config, load_config
from scheduler.durations import parse_duration
from scheduler.errors import DurationError
from scheduler.store.db import open_existing
from scheduler.store.readonly import ReadOnlyDatabase
from scheduler.tasktime import iso, parse_at


@contextmanager
def _readonly(config_path: str | None) -> Iterator[tuple[Config, ReadOnlyDatabase]]:
    """The configuration and a read-only connection to its existing database (never created:
    NoDatabase when there is none; its schema must be this tomlflow's, so the views exist)."""
    config = load_config(config_path)
    open_existing(config.database).close()
    db = ReadOnlyDatabase(config.query_database)
    try:
        yield config, db
    finally:
        db.close()


@click.command()
@click.argument("statement")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@click.option("--max-rows", default=10_000, show_default=True, type=click.IntRange(1, 10**7),
              help="Stop after this many rows.")
@config_option
@json_option
def sql(statement: str, as_csv: bool, max_rows: int, config_path: str | None,
        as_json: bool) -> int:
    """Run one SQL statement on a read-only connection (the database refuses writes)."""
    if as_csv and as_json:
        raise click.UsageError("--csv and --json exclude each other")
    with _readonly(config_path) as (_config, db):
        result = db.run_sql(statement, max_rows)
    if as_json:
        print_json(result.as_dicts())
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
    else:
        _print_table(result.columns, result.rows)
    if result.truncated:
        err_console().print(f"(stopped after {max_rows} rows: raise --max-rows for more)",
                            highlight=False)
    return ExitCode.OK


def _print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(*columns, box=None) if columns else Table(box=None)
    for row in rows:
        table.add_row(*("[dim]NULL[/]" if v is None else _escape(str(v)) for v in row))
    out_console().print(table)


@click.command()
@click.option("--since", metavar="AGE|TIME",
              help="Only executions created since then: 7d, 24h, 2024-01-02 (default: all).")
@click.option("--failures", default=10, show_default=True, type=click.IntRange(0, 200),
              help="How many recent failures to list.")
@config_option
@json_option
def stats(since: str | None, failures: int, config_path: str | None, as_json: bool) -> int:
    """Per phase: runs, success rate, durations (avg/p95/max); then recent failures."""
    now = SystemClock().now()
    start = _since(since, now) if since else None
    with _readonly(config_path) as (_config, db):
        phases = query.stats(db, start)
        failed = query.recent_failures(db, start, failures) if failures else []
    if as_json:
        print_json({"since": iso(start) if start else None, "phases": phases,
                    "recent_failures": failed})
        return ExitCode.OK
    _print_stats(phases)
    if failed:
        _print_failures(failed)
    return ExitCode.OK


def _since(text: str, now: datetime) -> datetime:
    try:
        return now - abs(parse_duration(text))
    except DurationError:
        pass
    try:
        return parse_at(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected an age (7d, 24h) or a time (2024-01-02)",
                                 param_hint="--since") from None


def _print_stats(phases: list[dict[str, Any]]) -> None:
    table = Table("file", "task", "runs", "ok", "error", "success", "avg", "p95", "max",
                  "last failure", box=None)
    for p in phases:
        rate = p["success_rate"]
        colour = "green" if rate is not None and rate >= 99 else "yellow" if (rate or 0) >= 90 \
            else "red"
        table.add_row(
            p["file_path"], p["task"], str(p["runs"]), str(p["complete"]), str(p["error"]),
            f"[{colour}]{rate:.1f}%[/]" if rate is not None else "-",
            _seconds(p["avg_seconds"]), _seconds(p["p95_seconds"]), _seconds(p["max_seconds"]),
            p["last_failure_at"] or "-",
        )
    out_console().print(table)


def _print_failures(rows: list[dict[str, Any]]) -> None:
    table = Table("id", "task", "task time", "try", "status", "ended", "msg", box=None,
                  title="recent failures", title_justify="left")
    for r in rows:
        table.add_row(str(r["id"]), r["task"], r["task_time"] or "-", str(r["attempt"]),
                      f"[red]{r['status']}[/]", r["ended_at"] or "-", _escape(r["msg"] or ""))
    out_console().print(table)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    return str(timedelta(seconds=round(value)))


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


@click.command()
@click.argument("question")
@click.option("--verbose", is_flag=True, help="Show each tool call and its result on stderr.")
@config_option
@json_option
def ask(question: str, verbose: bool, config_path: str | None, as_json: bool) -> int:
    """Ask Claude about your pipelines (needs ANTHROPIC_API_KEY); it reads, never writes."""
    from scheduler.ai import ask as asking  # the SDK loads only for this command

    key = asking.api_key()
    clock = SystemClock()
    with _readonly(config_path) as (config, db):
        answer = asking.ask(
            question, Toolbox(db, clock.now), asking.make_client(key),
            model=config.ai.model, max_turns=config.ai.max_turns, now=clock.now(),
            on_call=_show_call if verbose else None,
        )
    if as_json:
        print_json({"question": question, "answer": answer})
        return ExitCode.OK
    out_console().print(answer, markup=False, highlight=False)
    return ExitCode.OK


def _show_call(call: Any) -> None:
    arguments = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
    err_console().print(f"→ {call.name}({arguments}): {call.result.summary()[:200]}",
                        markup=False, highlight=False)


@click.command()
@config_option
def mcp(config_path: str | None) -> int:
    """Serve the read-only tools of `ask` over MCP on stdio (for Claude Desktop, Claude Code)."""
    from scheduler import mcp_server  # the MCP SDK loads only for this command

    with _readonly(config_path) as (_config, db):
        mcp_server.serve(Toolbox(db, SystemClock().now))
    return ExitCode.OK


COMMANDS = [sql, stats, ask, mcp]
