"""The executor contract: what the engine hands over, what comes back, and the interface.

The engine hands an executor a ``Launch`` (everything needed to run one attempt) and, on each tick,
collects finished ``Outcome`` values and records them. A failed command is an outcome with result
``error``; an executor raises only for misuse (submitting after shutdown, a duplicate id). The
engine imports only this module; each kind of executor lives in a module of its own.

Timestamps come from the injected ``now`` clock; timeouts and grace periods are intervals and are
measured on the monotonic clock, so a frozen test clock never stalls a timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol


class Result(StrEnum):
    """How an execution ended; these are also the terminal ``executions.status`` values."""

    COMPLETE = "complete"
    ERROR = "error"
    WARN = "warn"
    ALERT = "alert"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Reply:
    """What an in-process callable may return instead of a bare ``Result``."""

    result: Result = Result.COMPLETE
    msg: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    """One attempt to run, as the engine hands it over.

    ``command`` is an argv list, or one string when ``shell`` is true. A string without ``shell``
    is split with shlex; a list with ``shell`` is joined with shlex quoting. ``callable`` is used
    only by ``InProcessExecutor``: it returns a ``Result``, a ``Reply`` or ``None`` (complete).
    """

    execution_id: int
    task_id: str
    topic: str
    job: str
    info: str
    task_time: datetime | None
    attempt: int
    meta: Mapping[str, str]
    command: Sequence[str] | str
    shell: bool = False
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: timedelta | None = None
    callable: Callable[[Launch], Result | Reply | None] | None = None


@dataclass(frozen=True)
class LogLine:
    """One line of output; ``stream`` is ``stdout``, ``stderr`` or ``system`` (our own notes)."""

    execution_id: int
    seq: int
    ts: datetime
    stream: str
    line: str


@dataclass(frozen=True)
class Outcome:
    """How one launch ended. ``meta`` holds only what the execution emitted, not its input meta.

    ``exit_code`` is the process's exit status, negative (``-N``) when signal N ended it, and
    ``None`` when no process ran. ``pid`` is ``None`` likewise.
    """

    execution_id: int
    result: Result
    msg: str
    exit_code: int | None
    meta: Mapping[str, str]
    started_at: datetime
    ended_at: datetime
    logs: tuple[LogLine, ...]
    pid: int | None


@dataclass(frozen=True)
class Orphan:
    """An execution the database says is running, as recovery needs it.

    ``in_process``: a Python callable ran it inside the scheduler (it cannot have outlived
    it). ``timeout`` is still enforced on an adopted one, measured from ``started_at``.
    """

    execution_id: int
    pid: int | None
    started_at: datetime | None
    timeout: timedelta | None = None
    in_process: bool = False


@dataclass
class Recovery:
    """What ``Executor.recover`` found, per orphan.

    - ``outcomes``: ends known now: finished while no scheduler ran (the true result from its
      receipt), stopped by a scheduler that then died, or unknowable (an ERROR saying so);
    - ``adopted``: still running; waited for and reported through ``collect``;
    - ``unstarted``: provably never started (no process was ever spawned): queue them again;
    - ``reparsed``: ids whose output the spool holds in full: logs stored live for them are
      to be replaced by the lines this executor now hands out (outcome or ``lines``).
    """

    outcomes: list[Outcome] = field(default_factory=list)
    adopted: list[int] = field(default_factory=list)
    unstarted: list[int] = field(default_factory=list)
    reparsed: list[int] = field(default_factory=list)


Clock = Callable[[], datetime]
Started = tuple[int, int | None, datetime]


class Executor(Protocol):
    """What the engine needs from anything that runs launches."""

    def submit(self, launch: Launch) -> None:
        """Accept ``launch``; it starts now or, past capacity, waits in a FIFO in the executor.

        Raises ExecutorError after shutdown or when ``launch.execution_id`` is already in flight.
        """

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        """Return and forget every finished outcome.

        When none is ready, wait up to ``timeout`` seconds for one (``None``: as long as anything
        is in flight). Returns at once, empty, when nothing is in flight.
        """

    def started(self) -> list[Started]:
        """Return ``(execution_id, pid, started_at)`` for launches that began since the last call.

        A launch is listed here before its outcome can be collected.
        """

    def running(self) -> int:
        """Count launches submitted whose outcome is not finished yet (waiting or running)."""

    def cancel(self, execution_id: int, reason: str) -> None:
        """End ``execution_id`` as CANCELLED with msg ``reason``; unknown ids are ignored."""

    def shutdown(self, grace: float) -> list[Outcome]:
        """Stop accepting, cancel what waits, give what runs ``grace`` seconds, then cancel it.

        Returns every outcome not collected before, including the cancelled ones.
        """

    def lines(self) -> list[LogLine]:
        """Return and forget the output lines of running executions that became final since the
        last call (live logs). An execution's remaining lines come with its ``Outcome``; every
        line is handed out exactly once, by one or the other, with increasing ``seq``.
        """

    def recover(self, orphans: Sequence[Orphan], local: bool) -> Recovery:
        """Settle executions the database says are running that no executor of this process
        started (a scheduler died). ``local``: they were started on this machine.

        Each orphan lands in exactly one list of the ``Recovery``. Adopted ones count in
        ``running()`` and report through ``collect`` like any launch. Receipts of executions
        that are not orphans are deleted.
        """

    def release(self, execution_ids: Iterable[int]) -> None:
        """Forget what is kept of these executions' outcomes (their spool receipts).

        The engine calls it only after the transaction recording those outcomes committed, so
        a crash before that leaves the receipts for ``recover``.
        """


def make_outcome(
    execution_id: int,
    result: Result,
    msg: str,
    started_at: datetime,
    ended_at: datetime,
    *,
    exit_code: int | None = None,
    meta: Mapping[str, str] | None = None,
    logs: tuple[LogLine, ...] = (),
    pid: int | None = None,
) -> Outcome:
    """An ``Outcome`` of ``execution_id``; ``meta`` is copied."""
    return Outcome(
        execution_id=execution_id,
        result=result,
        msg=msg,
        exit_code=exit_code,
        meta=dict(meta or {}),
        started_at=started_at,
        ended_at=ended_at,
        logs=logs,
        pid=pid,
    )
