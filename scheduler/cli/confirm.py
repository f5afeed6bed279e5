"""Long work on a terminal: ask before touching many rows, and show a progress bar meanwhile.

Only a person at a terminal is asked or shown a bar: without one (cron, CI, a pipe) a command
runs as told, so scripts never hang on a prompt.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

CONFIRM_ABOVE = 1000  # rows; at most this many need no confirmation
Advance = Callable[[int], None]

yes_option = click.option(
    "--yes", "-y", "yes", is_flag=True, help=f"Do not ask, even above {CONFIRM_ABOVE:,} rows."
)


def is_terminal() -> bool:
    """Whether a person is at a terminal (both input and output)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def go_ahead(what: str, rows: int, yes: bool) -> bool:
    """True unless a person at a terminal, asked because ``rows`` exceeds CONFIRM_ABOVE and
    ``yes`` is unset, declines. ``what`` completes "This will ...", e.g. "delete 5,000 rows"."""
    if yes or rows <= CONFIRM_ABOVE or not is_terminal():
        return True
    return click.confirm(f"This will {what}. Continue?", default=False, err=True)


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Advance]:
    """A progress bar on stderr while the block runs (none without a terminal); yields the
    function that advances it by a number of rows."""
    terminal = is_terminal()
    console = Console(file=sys.stderr, force_terminal=terminal or None)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not terminal,
        transient=False,
    )
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda rows: bar.advance(task, rows)
