"""One exception tree for tomlflow.

Exceptions are for "could not even start" and for bad input or configuration. A command that
runs and fails is a result (an execution with status ``error``), never an exception.
Each class keeps its context in attributes and builds its one-line message from them, so the
command line can print ``str(exc)`` and exit 2 without a traceback.
"""

from __future__ import annotations

from scheduler.redact import redact


class TomlflowError(Exception):
    """Base of every error tomlflow raises on purpose."""


class ConfigError(TomlflowError):
    """The configuration file is missing, unreadable or holds a bad value."""

    def __init__(self, path: str, reason: str, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key}" if key else path
        super().__init__(redact(f"{where}: {reason}"))


class DurationError(TomlflowError):
    """A duration string is not in Go syntax (``1h30m``, ``-4h``, ``250ms``, ``2d``)."""

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"invalid duration: {value!r}")


class RuleError(TomlflowError):
    """A phase rule cannot be used; ``status`` is the message stored in workflow_phases."""

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(status)


class CronError(TomlflowError):
    """A cron expression cannot be parsed."""

    def __init__(self, expr: str, reason: str) -> None:
        self.expr = expr
        self.reason = reason
        super().__init__(f"invalid cron: {expr} {reason}")


class CronNeverFires(CronError):
    """A cron expression that is well formed but matches no time at all (``0 0 30 2 *``)."""

    def __init__(self, expr: str) -> None:
        super().__init__(expr, "never fires")


class WorkflowError(TomlflowError):
    """A workflow file, or one phase in it, cannot be read or used."""

    def __init__(self, path: str, reason: str, phase: str | None = None) -> None:
        self.path = path
        self.phase = phase
        self.reason = reason
        where = f"{path} [{phase}]" if phase else path
        super().__init__(f"{where}: {reason}")


class ConcurrentEditError(WorkflowError):
    """Another program changed a workflow file between our read and our write; nothing was
    written."""


class TaskNotFound(TomlflowError):
    """A task named on the command line matches no phase."""

    def __init__(self, task: str) -> None:
        self.task = task
        super().__init__(f"no phase with task {task!r}")


class StoreError(TomlflowError):
    """The database cannot be opened, migrated or written. The message never shows the URL's
    password: drivers quote URLs and DSNs in their errors."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(redact(f"database {url}: {reason}", url))


class ExecutorError(TomlflowError):
    """An execution could not be started at all (as opposed to a command that failed)."""
