"""``tomlflow file PATH``: report a file; every phase whose ``files`` glob matches it is queued.

The report is recorded (``file_reports``, source ``command``) in the transaction that queues the
executions, also when no phase matches.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import click

from scheduler import filetrigger
from scheduler.cli.common import (
    ExitCode,
    config_option,
    err_console,
    json_option,
    open_app,
    out_console,
    print_json,
)
from scheduler.store import file_reports, history
from scheduler.store.file_reports import FileReport, Source
from scheduler.store.history import NewExecution
from scheduler.tasktime import iso


def reported_path(text: str) -> str:
    """The path globs are matched against: a URL (``gs://b/x``) as given, a local path absolute.

    A local path is made absolute (without resolving links) so that a phase gets one name for
    a file however it was reported, and its command can open ``{meta:file}`` from any folder.
    """
    if "://" in text:
        return text
    return os.path.abspath(os.path.expanduser(text))


@click.command(name="file")
@click.argument("path")
@config_option
@json_option
def file_cmd(path: str, config_path: str | None, as_json: bool) -> int:
    """Report a file: queue every phase whose files= glob matches PATH; `run` executes them.

    A local PATH is matched as an absolute path; a URL (gs://bucket/key) as given. The task
    time comes from the path (…/2024/01/02/13/…, 20240102T130000, 2024-01-02), else now.
    The report is recorded in file_reports, also when no phase matches (exit 1).
    """
    reported = reported_path(path)
    with open_app(config_path) as app:
        app.catalog.refresh()
        now = datetime.now(UTC)
        rows = filetrigger.rows_for_file(
            app.catalog.phases(), reported, now, app.config.workflow_root
        )
        with app.db.write() as conn:
            history.insert_executions(conn, rows, now)
            file_reports.record(conn, [FileReport.of(reported, Source.COMMAND, rows)], now)
    if not rows:
        err_console().print(f"no phase matches {reported}", markup=False, highlight=False)
        return ExitCode.FAILED
    _report(rows, as_json)
    return ExitCode.OK


def _report(rows: list[NewExecution], as_json: bool) -> None:
    if as_json:
        print_json([_as_dict(row) for row in rows])
        return
    console = out_console()
    for row in rows:
        when = iso(row.task_time) if row.task_time else "-"
        state = "queued" if row.status is history.Status.QUEUED else row.status.value
        detail = row.msg if row.msg else row.info
        console.print(
            f"{state} {row.task} ({row.file_path}) for {when}: {detail}",
            highlight=False,
            markup=False,
        )


def _as_dict(row: NewExecution) -> dict[str, object]:
    return {
        "file_path": row.file_path,
        "task": row.task,
        "task_time": iso(row.task_time) if row.task_time else None,
        "status": row.status.value,
        "info": row.info,
        "meta": dict(row.meta),
        "msg": row.msg,
        "task_id": row.task_id,
    }


COMMANDS = [file_cmd]
