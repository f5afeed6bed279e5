"""The ``tomlflow`` command line: parse, build, delegate. ``main(argv)`` is callable from tests.

Exit codes: 0 ok, 1 a check or a run failed, 2 bad usage or bad input. Errors are one line on
stderr naming the file, phase or key at fault; never a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from scheduler.cli import edit, files, ops, query, runs, worker, workflows
from scheduler.cli.common import ExitCode, err_console
from scheduler.errors import TomlflowError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tomlflow", prog_name="tomlflow")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """tomlflow: a scheduler for batch pipelines whose workflows are TOML files."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for module in (workflows, runs, ops, query, edit, files, worker):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code instead of exiting."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="tomlflow", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        err_console().print(f"error: {exc.format_message()}", markup=False, highlight=False)
        return ExitCode.USAGE
    except click.exceptions.Abort:
        return ExitCode.INTERRUPTED
    except TomlflowError as exc:
        err_console().print(f"error: {exc}", markup=False, highlight=False)
        return ExitCode.USAGE
    return int(result) if isinstance(result, int) else ExitCode.OK
