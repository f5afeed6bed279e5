"""Commands about workflow files: init, validate, refresh, phases, graph."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click
from rich.table import Table

from scheduler import graph as dag
from scheduler.cli.common import (
    ExitCode,
    config_option,
    json_option,
    open_app,
    open_reader,
    out_console,
    print_broken,
    print_json,
)
from scheduler.store.workflows import file_rows
from scheduler.validation import PhaseSpec, Severity


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@config_option
@json_option
def init(directory: Path, config_path: str | None, as_json: bool) -> int:
    """Create tomlflow.toml, a workflows/ folder with an example, and the database."""
    from scheduler.store.db import where

    directory.mkdir(parents=True, exist_ok=True)
    starters = resources.files("scheduler") / "starter"
    created, kept = [], []
    for name, target in (
        ("tomlflow.toml", directory / "tomlflow.toml"),
        ("example.toml", directory / "workflows" / "example.toml"),
    ):
        if target.exists():
            kept.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((starters / name).read_text(encoding="utf-8"), encoding="utf-8")
        created.append(str(target))
    with open_app(config_path or str(directory / "tomlflow.toml")) as app:
        app.catalog.refresh()
        database = where(app.config.database)  # a password in the URL is never printed
    if as_json:
        print_json({"created": created, "kept": kept, "database": database})
        return ExitCode.OK
    console = out_console()
    for label, paths in (("kept", kept), ("created", created)):
        for path in paths:
            console.print(f"{label:<9} {path}", highlight=False, markup=False)
    console.print(f"database  {database}", highlight=False, markup=False)
    return ExitCode.OK


@click.command()
@config_option
@json_option
def validate(config_path: str | None, as_json: bool) -> int:
    """Load every workflow file and report each problem; exit 1 if any phase has an error."""
    with open_app(config_path) as app:
        app.catalog.refresh()
        with app.db.read() as conn:
            broken = {key: row.error for key, row in file_rows(conn).items() if row.error}
        phases = app.catalog.phases()
    problems = [p for p in phases if p.severity is not Severity.OK]
    failed = bool(broken) or any(p.severity is Severity.ERROR for p in problems)
    if as_json:
        print_json(
            {
                "ok": not failed,
                "files": [{"file_path": k, "error": v} for k, v in broken.items()],
                "phases": [_phase_json(p) for p in problems],
            }
        )
        return ExitCode.FAILED if failed else ExitCode.OK
    console = out_console()
    for key, error in broken.items():
        console.print(f"[red]error[/]   {key}: {error}", highlight=False)
    for phase in problems:
        colour = "red" if phase.severity is Severity.ERROR else "yellow"
        label = f"[{colour}]{phase.severity.value:<7}[/]"
        where = _escape(phase.where)
        console.print(f"{label} {where}: {_escape(phase.status)}", highlight=False)
    errors = len(broken) + sum(p.severity is Severity.ERROR for p in problems)
    warnings = sum(p.severity is Severity.WARNING for p in problems)
    console.print(f"{len(phases)} phases: {errors} errors, {warnings} warnings", highlight=False)
    return ExitCode.FAILED if failed else ExitCode.OK


@click.command()
@config_option
@json_option
def refresh(config_path: str | None, as_json: bool) -> int:
    """Reload changed workflow files into the database and print the files that changed;
    exit 1 while any file or phase has an error (whether or not it changed)."""
    with open_app(config_path) as app:
        result = app.catalog.refresh()
        with app.db.read() as conn:
            broken = {key: row.error for key, row in file_rows(conn).items() if row.error}
        failing = [p for p in app.catalog.phases() if p.severity is Severity.ERROR]
    code = ExitCode.FAILED if broken or failing else ExitCode.OK
    if as_json:
        print_json({"changed": result.keys, "errors": broken,
                    "phase_errors": [_phase_json(p) for p in failing]})
        return code
    console = out_console()
    for key in result.keys:
        console.print(key, highlight=False, markup=False)
    if not result.keys:
        console.print("no changes", style="dim")
    for key, error in broken.items():
        console.print(f"[red]error[/]   {key}: {_escape(error)}", highlight=False)
    for phase in failing:
        where = f"{phase.file_path} \\[{phase.task}]"
        console.print(f"[red]error[/]   {where}: {_escape(phase.status)}", highlight=False)
    return code


@click.command()
@config_option
@json_option
def phases(config_path: str | None, as_json: bool) -> int:
    """List every phase with its rule and validation status, as the files are now; then each
    file that does not load. Reads the database only to check it exists."""
    with open_reader(config_path, with_workflows=True) as reader:
        loaded = reader.workflows
    assert loaded is not None
    if as_json:
        print_json({"phases": [_phase_json(p) for p in loaded.specs],
                    "broken_files": _broken_json(loaded.broken)})
        return ExitCode.OK
    table = Table("file", "task", "depends on", "rule", "retry", "status", box=None)
    for p in loaded.specs:
        colour = {"error": "red", "warning": "yellow"}.get(p.severity.value, "green")
        status = p.status or "ok"
        table.add_row(p.file_path, p.task, p.depends_on, p.rule_text, str(p.retry),
                      f"[{colour}]{_escape(status)}[/]")
    out_console().print(table)
    print_broken(loaded.broken)
    return ExitCode.OK


@click.command()
@config_option
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]), default="text",
              show_default=True, help="Drawing format.")
def graph(config_path: str | None, fmt: str) -> int:
    """Draw the dependency graph (roots first)."""
    with open_app(config_path) as app:
        app.catalog.refresh()
        specs = app.catalog.phases()
    drawing = dag.build(specs)
    render = {"text": dag.to_text, "dot": dag.to_dot, "mermaid": dag.to_mermaid}[fmt]
    click.echo(render(drawing))
    return ExitCode.OK


def _phase_json(p: PhaseSpec) -> dict[str, object]:
    return {
        "file_path": p.file_path,
        "task": p.task,
        "depends_on": p.depends_on,
        "rule": p.rule_text,
        "template": p.template,
        "retry": p.retry,
        "status": p.status,
        "severity": p.severity.value,
    }


def _broken_json(broken: dict[str, str]) -> list[dict[str, str]]:
    return [{"file_path": key, "error": error} for key, error in broken.items()]


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


COMMANDS = [init, validate, refresh, phases, graph]
