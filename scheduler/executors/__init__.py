"""Executors: run launches and report their outcomes; never touch the store.

``base`` holds the contract the engine knows (``Launch``, ``Outcome``, the ``Executor``
protocol); ``command`` runs one command (shared by every executor that runs processes);
``output`` turns output into capped lines; ``spool`` keeps each execution's receipts;
``local`` and ``inprocess`` are the two executors of one machine.
"""

from scheduler.executors.base import (
    Executor,
    Launch,
    LogLine,
    Orphan,
    Outcome,
    Recovery,
    Reply,
    Result,
    Started,
)
from scheduler.executors.command import launch_env
from scheduler.executors.inprocess import InProcessExecutor
from scheduler.executors.local import LocalExecutor
from scheduler.executors.output import EVENT_PREFIX, Caps

__all__ = [
    "EVENT_PREFIX",
    "Caps",
    "Executor",
    "InProcessExecutor",
    "Launch",
    "LocalExecutor",
    "LogLine",
    "Orphan",
    "Outcome",
    "Recovery",
    "Reply",
    "Result",
    "Started",
    "launch_env",
]
