"""The ``tomlflow`` command line: parse, build, delegate. ``main(argv)`` is callable from tests.

Exit codes: 0 ok, 1 a check or a run failed, 2 bad usage or bad input. Errors are one line on
stderr naming the file, phase or key at fault; never a traceback.

Commands load lazily: the group knows each command's module and one-line help from the table
below and imports a module only when one of its commands runs, so ``tomlflow --version`` does
not pay for SQLAlchemy, the engine or the Claude SDK. A command missing from the table is still
found (every module's ``COMMANDS`` is searched), but ``--help`` lists only the table.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import click

from scheduler.cli.common import CONFIG_KEY, ExitCode, print_error
from scheduler.errors import TomlflowError


class Entry(NamedTuple):
    module: str  # under scheduler.cli
    attribute: str
    help: str


COMMAND_TABLE: dict[str, Entry] = {
    "init": Entry("workflows", "init", "Create tomlflow.toml, an example workflow, the database."),
    "validate": Entry("workflows", "validate", "Load every workflow file and report each problem."),
    "refresh": Entry("workflows", "refresh", "Reload changed workflow files into the database."),
    "phases": Entry("workflows", "phases", "List every phase with its rule and validation status."),
    "graph": Entry("workflows", "graph", "Draw the dependency graph (text, dot, mermaid)."),
    "next": Entry("next", "next_fires", "The next fire times of each cron phase (or of one)."),
    "render": Entry("tryout", "render", "Show the command and environment a run of TASK gets."),
    "test": Entry("tryout", "test_cmd", "Run TASK once in the foreground, recording nothing."),
    "run": Entry("runs", "run", "Run the scheduler (--once: one pass to the end)."),
    "trigger": Entry("runs", "trigger", "Queue one manual run of TASK."),
    "status": Entry("runs", "status", "One line per phase: last result, when, next fire."),
    "history": Entry("runs", "history_cmd", "Executions, newest first."),
    "logs": Entry("runs", "logs", "The output lines of one execution."),
    "file": Entry("files", "file_cmd", "Report a file: queue the phases whose files= matches."),
    "backfill": Entry("ops", "backfill", "Show (--execute: queue) TASK's runs over a range."),
    "retry": Entry("ops", "retry", "Queue a new attempt of a finished execution."),
    "pause": Entry("ops", "pause", "Stop TASK's cron fires until resume."),
    "resume": Entry("ops", "resume", "Let TASK's cron fire again."),
    "prune": Entry("ops", "prune", "Delete executions that ended long ago."),
    "cancel": Entry("ops", "cancel", "Cancel a queued or running execution."),
    "mark": Entry("ops", "mark", "Set a finished or stuck execution's result by hand."),
    "backup": Entry("ops", "backup_cmd", "A verified copy of the SQLite database, taken live."),
    "doctor": Entry("ops", "doctor", "One screen of health; exit 1 when something needs action."),
    "web": Entry("web", "web", "Serve the dashboard and HTTP API."),
    "worker": Entry("worker", "worker", "A Celery worker that runs phases sent by the scheduler."),
    "sql": Entry("query", "sql", "Run one SQL statement on a read-only connection."),
    "stats": Entry("query", "stats", "Per phase: runs, success rate, durations; failures."),
    "ask": Entry("query", "ask", "Ask Claude about your pipelines (reads, never writes)."),
    "mcp": Entry("query", "mcp", "Serve the read-only tools of ask over MCP on stdio."),
    "workflow": Entry("edit", "workflow", "Create workflow files (workflow new NAME)."),
    "phase": Entry("edit", "phase", "Add, change or remove one phase of a workflow file."),
    "fmt": Entry("edit", "fmt", "Normalise spacing in workflow files."),
}


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    # ctx.meta is shared with the subcommand's context, whose --config falls back to it.
    if value is not None:
        ctx.meta[CONFIG_KEY] = value


class LazyGroup(click.Group):
    """A group whose commands come from COMMAND_TABLE, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_TABLE) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = COMMAND_TABLE.get(cmd_name)
        if entry is not None:
            command = getattr(_module(entry.module), entry.attribute)
        else:
            command = _search_all(cmd_name)
        if isinstance(command, click.Command):
            self.add_command(command, cmd_name)
            return command
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table, without importing any command's module."""
        rows = [(name, COMMAND_TABLE[name].help) for name in sorted(COMMAND_TABLE)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [
            CompletionItem(name, help=entry.help)
            for name, entry in sorted(COMMAND_TABLE.items())
            if name.startswith(incomplete)
        ]


def _module(name: str) -> Any:
    return importlib.import_module(f"scheduler.cli.{name}")


def _search_all(cmd_name: str) -> click.Command | None:
    for module in sorted({entry.module for entry in COMMAND_TABLE.values()}):
        for command in getattr(_module(module), "COMMANDS", []):
            if command.name == cmd_name:
                return command  # type: ignore[no-any-return]
    return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tomlflow", prog_name="tomlflow")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option(
    "--config",
    metavar="PATH",
    expose_value=False,
    callback=_remember_config,
    help="Configuration file for any command (also accepted after the command).",
)
def cli(verbose: int) -> None:
    """tomlflow: a scheduler for batch pipelines whose workflows are TOML files."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code instead of exiting."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="tomlflow", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        # Plain `tomlflow` asks what there is: the help, not an error.
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return ExitCode.OK
    except click.ClickException as exc:
        print_error(exc.format_message())
        return ExitCode.USAGE
    except click.exceptions.Abort:
        return ExitCode.INTERRUPTED
    except TomlflowError as exc:
        print_error(str(exc))
        return ExitCode.USAGE
    except OSError as exc:
        # A path the user named (a folder to create, a file to write) is unusable.
        print_error(describe_os_error(exc))
        return ExitCode.USAGE
    return int(result) if isinstance(result, int) else ExitCode.OK


def describe_os_error(exc: OSError) -> str:
    """``/proc/x: No such file or directory``: the path (both, for a rename) and why."""
    reason = exc.strerror or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return f"cannot proceed: {reason}"
    return f"{' → '.join(str(p) for p in paths)}: {reason}"
