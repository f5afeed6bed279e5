"""What every command shares: exit codes, ``--config``/``--json``, output, the App a writing
command builds and the Reader a reading one opens."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any, TypeVar

import click

from scheduler.errors import TaskNotFound, TomlflowError, WorkflowError

# Imported where used, so that a command pays only for what it needs (``--version`` for none).
if TYPE_CHECKING:
    from rich.console import Console

    from scheduler.catalog import Catalog
    from scheduler.config import Config
    from scheduler.store.db import Database
    from scheduler.validation import PhaseSpec

F = TypeVar("F", bound=Callable[..., Any])

# ctx.meta key of a --config given before the command (``tomlflow --config x.toml status``).
CONFIG_KEY = "tomlflow.config"


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


def out_console() -> Console:
    from rich.console import Console

    # Piped output (a file, grep, a test) gets room for whole rows instead of 80 columns.
    width = None if sys.stdout.isatty() else 200
    return Console(file=sys.stdout, soft_wrap=True, width=width)


def short_time(text: str | None) -> str:
    """``2024-01-02T13:00:00.000000Z`` → ``2024-01-02 13:00:00`` for tables; ``-`` for none."""
    return text[:19].replace("T", " ") if text else "-"


def err_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, soft_wrap=True)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, as one plain line."""
    click.echo(f"error: {message}", err=True)


def config_option(func: F) -> F:
    """``--config PATH``: the configuration file (else $TOMLFLOW_CONFIG, else ./tomlflow.toml)."""
    return click.option(
        "--config",
        "config_path",
        metavar="PATH",
        default=None,
        callback=_config_or_global,
        help="Configuration file (default: $TOMLFLOW_CONFIG, else ./tomlflow.toml if present).",
    )(func)


def _config_or_global(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--config`` after the command wins; else the one given before it, if any."""
    return value if value is not None else ctx.meta.get(CONFIG_KEY)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@dataclass
class App:
    """The parts a command works with, built from the configuration."""

    config: Config
    db: Database
    catalog: Catalog


@contextmanager
def open_app(config_path: str | None) -> Iterator[App]:
    """Load the configuration, open (and migrate) the database; close it afterwards."""
    from scheduler.catalog import Catalog
    from scheduler.clock import SystemClock
    from scheduler.config import load_config
    from scheduler.store.db import Database

    config = load_config(config_path)
    db = Database(config.database)
    try:
        yield App(config, db, Catalog(db, config.workflows, SystemClock(), config.workers))
    finally:
        db.close()


@dataclass
class Reader:
    """What a command that only reads works with: the configuration and the existing
    database, opened read-only (never created, never migrated)."""

    config: Config
    db: Database
    workflows: Workflows | None


@contextmanager
def open_reader(config_path: str | None, *, with_workflows: bool = False) -> Iterator[Reader]:
    """Load the configuration (and with ``with_workflows`` the workflow files, see
    read_workflows) and open its database read-only; raises NoDatabase (one line, exit 2) when
    there is none yet."""
    from scheduler.config import load_config
    from scheduler.store.db import open_existing

    config = load_config(config_path)
    workflows = read_workflows(config) if with_workflows else None
    db = open_existing(config.database)
    try:
        yield Reader(config, db, workflows)
    finally:
        db.close()


@dataclass(frozen=True)
class Workflows:
    """The workflow files as they are now: their phases, and each file that does not load."""

    specs: list[PhaseSpec]
    broken: dict[str, str]  # file key → error


def read_workflows(config: Config) -> Workflows:
    """Parse and validate every workflow file as a refresh would, storing nothing (for the
    commands that only read). Raises WorkflowError when the workflow path does not exist."""
    from scheduler.loader import WorkflowSource, parse_bytes, read_source
    from scheduler.validation import validate_file

    if not config.workflows.exists():
        raise WorkflowError(str(config.workflows), "no such file or folder")
    specs: list[PhaseSpec] = []
    broken: dict[str, str] = {}
    for key, path in WorkflowSource(config.workflows).files().items():
        try:
            data, modified = read_source(path)
        except OSError as exc:
            broken[key] = f"cannot read: {exc.strerror or exc}"
            continue
        load = parse_bytes(key, data, modified)
        if load.error:
            broken[key] = load.error
        else:
            specs.extend(validate_file(key, load.phases))
    return Workflows(sorted(specs, key=lambda s: (s.file_path, s.task)), broken)


def print_broken(broken: dict[str, str]) -> None:
    """One line per workflow file that does not load, after a command's table."""
    console = out_console()
    for key, error in broken.items():
        console.print(f"[red]broken file[/] {key}: {_escape(error)}", highlight=False)


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


file_option = click.option(
    "--file", "file_path", metavar="FILE", help="Workflow file, when TASK is in several."
)


def find_phase(app: App, task: str, file_path: str | None) -> PhaseSpec:
    """The phase named ``task`` (exactly, else by topic when that is unique), after a refresh.

    Raises TaskNotFound, or UsageError when it is in several files and ``file_path`` is unset.
    """
    app.catalog.refresh()
    return match_phase(app.catalog.phases(), task, file_path)


def match_phase(specs: list[PhaseSpec], task: str, file_path: str | None) -> PhaseSpec:
    """The phase of ``specs`` named ``task``, as find_phase finds it (same errors)."""
    specs = [s for s in specs if file_path in (None, s.file_path)]
    matches = [s for s in specs if s.task == task] or [
        s for s in specs if ":" not in task and s.topic == task
    ]
    if not matches:
        raise TaskNotFound(task)
    if len(matches) > 1:
        names = ", ".join(f"{s.file_path} [{s.task}]" for s in matches)
        raise click.UsageError(f"{task!r} names several phases ({names}): use --file or topic:job")
    return matches[0]


def runnable_phase(spec: PhaseSpec) -> PhaseSpec:
    """``spec``, or a one-line error when its status stops it from running."""
    if not spec.runnable:
        raise TomlflowError(f"{spec.file_path} [{spec.task}]: phase has errors: {spec.status}")
    return spec


def parse_meta(items: tuple[str, ...]) -> dict[str, str]:
    """``--meta KEY=VALUE`` options as a dict; a malformed one is a usage error."""
    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


def option_time(text: str | None, option: str) -> datetime | None:
    """A task time given on the command line, or None; bad text is a usage error on ``option``."""
    from scheduler.tasktime import parse_at

    if text is None:
        return None
    try:
        return parse_at(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
