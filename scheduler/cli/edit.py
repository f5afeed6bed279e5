"""Commands that edit workflow files: workflow new, phase add|set|rm, fmt.

They change files only, never the database: a running scheduler sees the new md5 on its next
refresh. Every edit is validated before it is written (see ``scheduler.editor``); a refused edit
is one ``error:`` line and exit 2, with the file untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from scheduler import editor
from scheduler.cli.common import ExitCode, config_option, err_console, out_console
from scheduler.config import load_config
from scheduler.errors import WorkflowError

F = TypeVar("F", bound=Callable[..., Any])


def _value_options(func: F) -> F:
    """``--rule``, ``--depends-on``, ``--retry``, ``--template``: the phase keys to write."""
    for decorator in reversed(
        [
            click.option("--rule", default=None, help="Rule query string (cron=...&offset=...)."),
            click.option("--depends-on", default=None, help="Parent task (topic or topic:job)."),
            click.option("--retry", type=int, default=None, help="Extra attempts after a failure."),
            click.option("--template", default=None, help="The command template."),
        ]
    ):
        func = decorator(func)
    return func


def _values(**options: str | int | None) -> dict[str, editor.Value]:
    return {key: value for key, value in options.items() if value is not None}


def _workflows(config_path: str | None) -> Path:
    return load_config(config_path).workflows


def _report(key: str, verb: str, edit: editor.Edit) -> None:
    out_console().print(f"{verb} {key} [{edit.task}]", markup=False, highlight=False)
    for task in edit.removed:
        out_console().print(f"removed {key} [{task}] (cascade)", markup=False, highlight=False)
    for warning in edit.warnings:
        err_console().print(f"warning: {key} [{edit.task}]: {warning}", markup=False,
                            highlight=False)


@click.group()
def workflow() -> None:
    """Create workflow files."""


@workflow.command("new")
@click.argument("name")
@config_option
def workflow_new(name: str, config_path: str | None) -> int:
    """Create NAME.toml in the workflow folder (NAME may hold sub-folders: sub/etl)."""
    folder = editor.workflow_folder(_workflows(config_path))
    path, key = editor.new_file_path(folder, name)
    editor.create_file(path, key, editor.new_workflow_text(key))
    out_console().print(f"created {path}", markup=False, highlight=False)
    return ExitCode.OK


@click.group()
def phase() -> None:
    """Add, change or remove one phase of a workflow file, keeping its comments."""


@phase.command("add")
@click.argument("file")
@click.option("--task", required=True, help="The new phase's task (topic or topic:job).")
@_value_options
@config_option
def phase_add(file: str, task: str, config_path: str | None, **options: str | int | None) -> int:
    """Append a phase to FILE (relative to the workflow folder, or a path)."""
    path, key = editor.resolve_file(_workflows(config_path), file)
    values = {"task": task, **_values(**options)}
    edit = editor.edit_file(path, key, lambda text: editor.add_phase(text, key, values))
    _report(key, "added", edit)
    return ExitCode.OK


@phase.command("set")
@click.argument("file")
@click.argument("task")
@click.option("--task", "new_task", default=None, help="Rename the phase's task.")
@_value_options
@click.option("--unset", "unset", multiple=True, metavar="KEY",
              help="Remove a key (rule, depends_on, retry, template); repeatable.")
@config_option
def phase_set(
    file: str,
    task: str,
    new_task: str | None,
    unset: tuple[str, ...],
    config_path: str | None,
    **options: str | int | None,
) -> int:
    """Change keys of phase TASK in FILE; keys it has keep their place and spelling."""
    changes = _changes(new_task, unset, _values(**options))
    path, key = editor.resolve_file(_workflows(config_path), file)
    edit = editor.edit_file(path, key, lambda text: editor.set_phase(text, key, task, changes))
    _report(key, "updated", edit)
    return ExitCode.OK


def _changes(
    new_task: str | None, unset: tuple[str, ...], values: dict[str, editor.Value]
) -> dict[str, editor.Value | None]:
    changes: dict[str, editor.Value | None] = dict(values)
    if new_task is not None:
        changes["task"] = new_task
    for spelling in unset:
        name = editor.canonical_key(spelling)
        if name is None or name == "task":
            choices = "rule, depends_on, retry, template"
            raise click.BadParameter(f"{spelling!r} (choose from {choices})", param_hint="--unset")
        if name in changes:
            raise click.UsageError(f"{name} is both set and unset")
        changes[name] = None
    if not changes:
        raise click.UsageError("nothing to change: give --rule, --depends-on, ... or --unset")
    return changes


@phase.command("rm")
@click.argument("file")
@click.argument("task")
@click.option("--cascade", is_flag=True, help="Also remove the phases that depend on it.")
@config_option
def phase_rm(file: str, task: str, cascade: bool, config_path: str | None) -> int:
    """Remove phase TASK from FILE (refused if others depend on it, unless --cascade)."""
    path, key = editor.resolve_file(_workflows(config_path), file)
    edit = editor.edit_file(
        path, key, lambda text: editor.remove_phase(text, key, task, cascade=cascade)
    )
    _report(key, "removed", edit)
    return ExitCode.OK


@click.command("fmt")
@click.argument("files", nargs=-1)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any file would change.")
@config_option
def fmt(files: tuple[str, ...], check: bool, config_path: str | None) -> int:
    """Normalise spacing in workflow files (all of them when no FILE is given)."""
    workflows = _workflows(config_path)
    targets = [editor.resolve_file(workflows, f) for f in files] or editor.workflow_files(workflows)
    changed, failed = [], False
    for path, key in targets:
        try:
            editor.check_workflow_file(workflows, path)
            if editor.format_file(path, key, check=check):
                changed.append(key)
        except WorkflowError as exc:
            err_console().print(f"error: {exc}", markup=False, highlight=False)
            failed = True
    verb = "would reformat" if check else "formatted"
    for key in changed:
        out_console().print(f"{verb} {key}", markup=False, highlight=False)
    if failed:
        return ExitCode.USAGE
    return ExitCode.FAILED if check and changed else ExitCode.OK


COMMANDS = [workflow, phase, fmt]
