"""Try a phase without scheduling it: ``render TASK`` shows what a run would execute, ``test
TASK`` runs it once in the foreground. Neither records anything, nor needs a database: the phase
comes from the workflow files as they are now.

The launch is built by ``scheduler.dispatcher.build_launch``, the function the engine uses, from
the rows the planner makes for a manual trigger, so what is shown or run is exactly what a
``trigger`` would run. Its execution id is 0: nothing is recorded.
"""

from __future__ import annotations

import collections
import json
import shlex
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar

import click

from scheduler.cli.common import (
    ExitCode,
    config_option,
    file_option,
    json_option,
    match_phase,
    option_time,
    out_console,
    parse_meta,
    print_json,
    read_workflows,
    runnable_phase,
)
from scheduler.config import Config, load_config

# The one place the executor is imported from (its module may move; repoint this line).
from scheduler.executors import Launch, LocalExecutor, LogLine, Outcome, Result, launch_env

F = TypeVar("F", bound=Callable[..., Any])

DRY_RUN_ID = 0  # TOMLFLOW_EXECUTION_ID of a run that is not recorded


def _phase_options(func: F) -> F:
    """TASK, --at, --meta, --file, --config, --json: what render and test share."""
    for decorator in reversed([
        click.argument("task"),
        click.option("--at", metavar="TIME",
                     help="Task time: 2024-01-02, 2024-01-02T13 or RFC 3339 (default: now)."),
        click.option("--meta", "metas", multiple=True, metavar="KEY=VALUE",
                     help="Meta for the task (repeatable)."),
        file_option,
        config_option,
        json_option,
    ]):
        func = decorator(func)
    return func


def launches(
    task: str, at: str | None, metas: tuple[str, ...], file_path: str | None,
    config_path: str | None,
) -> tuple[Config, list[Launch]]:
    """The launches a manual trigger of TASK would run (one, or one per batch item)."""
    from scheduler import planner
    from scheduler.dispatcher import build_launch
    from scheduler.store.history import Trigger

    task_time = option_time(at, "--at") or datetime.now(UTC)
    meta = parse_meta(metas)
    config = load_config(config_path)
    spec = runnable_phase(match_phase(read_workflows(config).specs, task, file_path))
    now = datetime.now(UTC)
    rows = planner.new_rows(spec, task_time, planner.base_meta(spec, meta), Trigger.MANUAL, now,
                            config.workflow_root)
    return config, [build_launch(_unrecorded(row.values(now)), spec, config) for row in rows]


def _unrecorded(values: dict[str, Any]) -> Any:
    """An Execution as the store would return it for ``values``, with id DRY_RUN_ID."""
    from scheduler.store.history import Execution

    # What Execution.from_row reads is a row's mapping; columns set only later are None.
    row = SimpleNamespace(_mapping=collections.defaultdict(lambda: None,
                                                          {**values, "id": DRY_RUN_ID}))
    return Execution.from_row(row)


def argv_of(launch: Launch) -> list[str]:
    """The argument list the process gets (``sh -c TEXT`` for a shell worker)."""
    command = launch.command
    if launch.shell:
        return ["/bin/sh", "-c", command if isinstance(command, str) else shlex.join(command)]
    return shlex.split(command) if isinstance(command, str) else list(command)


def tomlflow_env(launch: Launch) -> dict[str, str]:
    """The worker's own variables and the TOMLFLOW_* ones, as the process gets them."""
    env = launch_env(launch)
    keys = set(launch.env) | {k for k in env if k.startswith("TOMLFLOW_")}
    return {key: env[key] for key in sorted(keys)}


@click.command()
@_phase_options
def render(task: str, at: str | None, metas: tuple[str, ...], file_path: str | None,
           config_path: str | None, as_json: bool) -> int:
    """Show the exact argument list and TOMLFLOW_* environment a run of TASK gets; record
    nothing."""
    config, planned = launches(task, at, metas, file_path, config_path)
    items = [_described(launch, config) for launch in planned]
    if as_json:
        print_json(items)
        return ExitCode.OK
    console = out_console()
    for item in items:
        console.print(f"# {item['task']} for {item['task_time'] or '-'}", markup=False,
                      highlight=False)
        if item["python"]:
            console.print(f"python worker: {item['python']}", markup=False, highlight=False)
        else:
            console.print(shlex.join(item["argv"]), markup=False, highlight=False)
        for label in ("cwd", "timeout"):
            if item[label]:
                console.print(f"{label}: {item[label]}", markup=False, highlight=False)
        for key, value in item["env"].items():
            console.print(f"{key}={shlex.quote(value)}", markup=False, highlight=False)
    return ExitCode.OK


def _described(launch: Launch, config: Config) -> dict[str, Any]:
    worker = config.worker_for(launch.topic, launch.job)
    return {
        "task": f"{launch.topic}:{launch.job}" if launch.job else launch.topic,
        "task_time": launch.task_time.isoformat() if launch.task_time else None,
        "python": worker.python if worker and worker.python else None,
        "argv": argv_of(launch),
        "shell": launch.shell,
        "cwd": launch.cwd,
        "timeout": str(launch.timeout) if launch.timeout else None,
        "env": tomlflow_env(launch),
    }


@click.command(name="test")
@_phase_options
def test_cmd(task: str, at: str | None, metas: tuple[str, ...], file_path: str | None,
             config_path: str | None, as_json: bool) -> int:
    """Run TASK once in the foreground with its worker settings and timeout; record nothing.
    Exit 0 when the result is complete, 1 otherwise."""
    _config, planned = launches(task, at, metas, file_path, config_path)
    outcomes = [run_one(launch, echo=not as_json) for launch in planned]
    if as_json:
        print_json([_outcome_json(o) for o in outcomes])
    else:
        for outcome in outcomes:
            _print_outcome(outcome)
    complete = all(o.result is Result.COMPLETE for o in outcomes)
    return ExitCode.OK if complete else ExitCode.FAILED


def run_one(launch: Launch, echo: bool) -> Outcome:
    """Run one launch through the executor, printing its output as it comes; Ctrl-C cancels it."""
    executor = LocalExecutor(1, lambda: datetime.now(UTC))
    executor.submit(launch)
    try:
        outcome = _follow(executor, to_stderr=not echo)
    except KeyboardInterrupt:
        executor.cancel(launch.execution_id, "interrupted")
        executor.shutdown(0)
        raise click.exceptions.Abort() from None
    executor.shutdown(0)
    return outcome


def _follow(executor: LocalExecutor, to_stderr: bool) -> Outcome:
    """Print the lines the run prints while it runs (at most ~0.2 s behind), then the rest."""
    while True:
        done = executor.collect(timeout=0.2)
        _echo(executor.lines(), to_stderr)  # after collect: an ended run's rest is its outcome's
        if done:
            _echo(done[0].logs, to_stderr)
            return done[0]


def _echo(lines: Iterable[LogLine], to_stderr: bool) -> None:
    for line in lines:
        click.echo(line.line, err=to_stderr or line.stream != "stdout")


def _print_outcome(outcome: Outcome) -> None:
    colour = "green" if outcome.result is Result.COMPLETE else "red"
    console = out_console()
    console.print(f"result: [{colour}]{outcome.result.value}[/]", highlight=False)
    if outcome.msg:
        console.print(f"msg: {outcome.msg}", markup=False, highlight=False)
    if outcome.meta:
        meta = json.dumps(dict(outcome.meta), sort_keys=True)
        console.print(f"meta: {meta}", markup=False, highlight=False)


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "result": outcome.result.value,
        "msg": outcome.msg,
        "exit_code": outcome.exit_code,
        "meta": dict(outcome.meta),
        "seconds": round((outcome.ended_at - outcome.started_at).total_seconds(), 3),
    }


COMMANDS = [render, test_cmd]
