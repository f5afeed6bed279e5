"""Executors: run launches and report their outcomes; never touch the store.

``base`` holds the contract the engine knows (``Launch``, ``Outcome``, the ``Executor``
protocol); ``command`` runs one command (shared by every executor that runs processes);
``local`` and ``inprocess`` are the two executors of one machine.
"""

from scheduler.executors.base import Executor, Launch, LogLine, Outcome, Reply, Result, Started
from scheduler.executors.command import EVENT_PREFIX, kill_orphan, launch_env
from scheduler.executors.inprocess import InProcessExecutor
from scheduler.executors.local import LocalExecutor

__all__ = [
    "EVENT_PREFIX",
    "Executor",
    "InProcessExecutor",
    "Launch",
    "LocalExecutor",
    "LogLine",
    "Outcome",
    "Reply",
    "Result",
    "Started",
    "kill_orphan",
    "launch_env",
]
