"""Executors: run launches and report their outcomes; never touch the store.

The engine hands an executor a ``Launch`` (everything needed to run one attempt) and, on each tick,
collects finished ``Outcome`` values and records them. A failed command is an outcome with result
``error``; an executor raises only for misuse (submitting after shutdown, a duplicate id).

Two implementations share one contract (``Executor``):

- ``LocalExecutor`` runs commands as child processes, each in its own process group.
- ``InProcessExecutor`` calls ``launch.callable`` on a thread (Python workers, overhead benchmarks).

Timestamps come from the injected ``now`` clock; timeouts and grace periods are intervals and are
measured on the monotonic clock, so a frozen test clock never stalls a timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import IO, Generic, Protocol, TypeVar

from scheduler.durations import format_duration
from scheduler.errors import ExecutorError

log = logging.getLogger(__name__)

EVENT_PREFIX = "__WF_EVENT__:"
"""A child's output line starting with this carries a JSON object: ``result``, ``msg``, ``meta``."""

DEFAULT_LOG_CAP = 10_000
DEFAULT_KILL_GRACE = 2.0
_READ_SIZE = 65536
# A line longer than this is cut into pieces so one runaway line cannot exhaust memory.
_MAX_LINE_BYTES = 1 << 20
# After the command's main process exits we wait this long for its pipes to close; whatever still
# holds them (a background grandchild) is then killed so the execution can end.
_EXIT_DRAIN = 0.5
# Without pidfd we learn of the exit by polling this often.
_POLL_INTERVAL = 0.05


class Result(StrEnum):
    """How an execution ended; these are also the terminal ``executions.status`` values."""

    COMPLETE = "complete"
    ERROR = "error"
    WARN = "warn"
    ALERT = "alert"
    CANCELLED = "cancelled"


_EVENT_RESULTS = frozenset({Result.COMPLETE, Result.ERROR, Result.WARN, Result.ALERT})


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


# ---------------------------------------------------------------------------------------------
# Shared bookkeeping


S = TypeVar("S")


class _Board(Generic[S]):
    """Thread-safe state shared by an executor's callers and its worker threads.

    Holds the FIFO of waiting launches, the per-run state ``S`` of active ones, the finished
    outcomes and the start notices. An execution is "in flight" while waiting or active.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._finished = threading.Condition(self._lock)
        self._order: deque[int] = deque()
        self._waiting: dict[int, Launch] = {}
        self._active: dict[int, S] = {}
        self._done: list[Outcome] = []
        self._started: list[Started] = []
        self._activations = 0
        self._closed = False

    def add(self, launch: Launch) -> None:
        """Queue ``launch``; raises ExecutorError when closed or its id is in flight."""
        eid = launch.execution_id
        with self._lock:
            if self._closed:
                raise ExecutorError(f"executor is shut down; cannot run execution {eid}")
            if eid in self._waiting or eid in self._active:
                raise ExecutorError(f"execution {eid} is already in flight")
            self._waiting[eid] = launch
            self._order.append(eid)
            self._work.notify()

    def take(
        self, make: Callable[[Launch], S], notice: Callable[[S], Started] | None = None
    ) -> tuple[Launch, S] | None:
        """Block for the oldest waiting launch and mark it active with state ``make(launch)``.

        ``notice``, when given, records the start in the same step, so it precedes any outcome
        another thread (cancel, timeout) may publish. Returns ``None`` once the board is closed.
        """
        with self._lock:
            while True:
                while self._order:
                    launch = self._waiting.pop(self._order.popleft(), None)
                    if launch is not None:  # None: it was withdrawn while waiting
                        state = make(launch)
                        self._active[launch.execution_id] = state
                        self._activations += 1
                        if notice is not None:
                            self._started.append(notice(state))
                            self._finished.notify_all()
                        return launch, state
                if self._closed:
                    return None
                self._work.wait()

    def withdraw(self, execution_id: int) -> Launch | None:
        """Remove a launch that has not started yet; ``None`` when it is not waiting."""
        with self._lock:
            return self._waiting.pop(execution_id, None)

    def active(self, execution_id: int) -> S | None:
        with self._lock:
            return self._active.get(execution_id)

    def actives(self) -> list[S]:
        with self._lock:
            return list(self._active.values())

    def note_started(self, execution_id: int, pid: int | None, at: datetime) -> None:
        with self._lock:
            self._started.append((execution_id, pid, at))

    def drain_started(self) -> list[Started]:
        with self._lock:
            started, self._started = self._started, []
            return started

    def finish(self, execution_id: int, outcome: Outcome) -> bool:
        """Publish the outcome of an active execution; False (and dropped) if it is not active."""
        with self._lock:
            if self._active.pop(execution_id, None) is None:
                return False
            self._done.append(outcome)
            self._finished.notify_all()
            return True

    def report(self, outcome: Outcome) -> None:
        """Publish an outcome for a launch that never became active (withdrawn while waiting)."""
        with self._lock:
            self._done.append(outcome)
            self._finished.notify_all()

    def pending(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._active)

    def collect(self, timeout: float | None, until_activation: bool = False) -> list[Outcome]:
        """Return finished outcomes, waiting as ``Executor.collect`` describes.

        With ``until_activation`` the wait also ends (possibly empty) when a launch becomes
        active, so a caller can take its new deadline into account.
        """
        with self._lock:
            activations = self._activations

            def ready() -> bool:
                if until_activation and self._activations != activations:
                    return True
                return bool(self._done) or not (self._waiting or self._active)

            if timeout is None or timeout > 0:
                self._finished.wait_for(ready, timeout)
            done, self._done = self._done, []
            return done

    def close(self) -> list[Launch]:
        """Refuse further launches; return (and forget) those still waiting, oldest first."""
        with self._lock:
            self._closed = True
            waiting = [self._waiting[eid] for eid in self._order if eid in self._waiting]
            self._waiting.clear()
            self._order.clear()
            self._work.notify_all()
            self._finished.notify_all()
            return waiting


def _outcome(
    launch: Launch,
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
    return Outcome(
        execution_id=launch.execution_id,
        result=result,
        msg=msg,
        exit_code=exit_code,
        meta=dict(meta or {}),
        started_at=started_at,
        ended_at=ended_at,
        logs=logs,
        pid=pid,
    )


def _collect_until_idle(executor: Executor, board: _Board[S], limit: float | None) -> list[Outcome]:
    """Collect until nothing is in flight, for at most ``limit`` seconds (``None``: no limit)."""
    end = None if limit is None else time.monotonic() + limit
    outcomes: list[Outcome] = []
    while board.pending():
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            break
        outcomes += executor.collect(left)
    return outcomes + executor.collect(0)


# ---------------------------------------------------------------------------------------------
# Output: lines, the cap, and __WF_EVENT__ lines


class _Output:
    """Turns a child's output bytes into capped LogLines and applies ``__WF_EVENT__`` lines.

    Events are honoured even after the cap, so a chatty command still reports its result.
    The last non-empty, non-event stderr line is kept for the error message.
    """

    def __init__(self, execution_id: int, cap: int, now: Clock) -> None:
        self._execution_id = execution_id
        self._cap = cap
        self._now = now
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._lines: list[LogLine] = []
        self._kept = 0
        self._truncated = False
        self.result: Result | None = None
        self.msg: str | None = None
        self.meta: dict[str, str] = {}
        self.last_stderr = ""

    @property
    def logs(self) -> tuple[LogLine, ...]:
        return tuple(self._lines)

    def feed(self, stream: str, chunk: bytes) -> None:
        buf = self._partial[stream]
        buf += chunk
        if b"\n" in chunk:
            *lines, rest = buf.split(b"\n")
            buf[:] = rest
            for raw in lines:
                self._line(stream, raw)
        while len(buf) > _MAX_LINE_BYTES:
            self._line(stream, bytes(buf[:_MAX_LINE_BYTES]))
            del buf[:_MAX_LINE_BYTES]

    def close(self, stream: str) -> None:
        """The stream reached EOF: a last line without a newline still counts."""
        buf = self._partial[stream]
        if buf:
            self._line(stream, bytes(buf))
            buf.clear()

    def system(self, text: str) -> None:
        """Record a note of ours; never subject to the cap."""
        self._append("system", text)

    def _line(self, stream: str, raw: bytes | bytearray) -> None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        if text.startswith(EVENT_PREFIX):
            self._keep(stream, text)
            problem = self._event(text[len(EVENT_PREFIX) :])
            if problem:
                self._keep("system", f"ignored {EVENT_PREFIX} line: {problem}")
            return
        if stream == "stderr" and text.strip():
            self.last_stderr = text.strip()
        self._keep(stream, text)

    def _keep(self, stream: str, text: str) -> None:
        if self._kept < self._cap:
            self._kept += 1
            self._append(stream, text)
        elif not self._truncated:
            self._truncated = True
            self.system(f"... output truncated after {self._cap} lines")

    def _append(self, stream: str, text: str) -> None:
        seq = len(self._lines) + 1
        self._lines.append(LogLine(self._execution_id, seq, self._now(), stream, text))

    def _event(self, payload: str) -> str | None:
        """Apply one event; return what was wrong with it, or None."""
        try:
            event = json.loads(payload)
        except ValueError as exc:
            return f"invalid JSON ({exc})"
        if not isinstance(event, dict):
            return "not a JSON object"
        problems = [p for p in (self._event_result(event), self._event_meta(event)) if p]
        if "msg" in event:
            msg = event["msg"]
            self.msg = msg if isinstance(msg, str) else json.dumps(msg)
        return "; ".join(problems) or None

    def _event_result(self, event: dict[str, object]) -> str | None:
        if "result" not in event:
            return None
        value = event["result"]
        if value not in _EVENT_RESULTS:
            return f"unknown result {value!r}"
        self.result = Result(str(value))
        return None

    def _event_meta(self, event: dict[str, object]) -> str | None:
        if "meta" not in event:
            return None
        meta = event["meta"]
        if not isinstance(meta, dict):
            return "meta is not an object"
        for key, value in meta.items():
            self.meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
        return None


# ---------------------------------------------------------------------------------------------
# LocalExecutor


class _StartFailure(Exception):
    """The launch cannot become a process; ``msg`` is the outcome message."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def _popen_args(launch: Launch) -> tuple[list[str] | str, str]:
    """Return what to hand Popen and the program name used in messages."""
    command = launch.command
    if launch.shell:
        text = command if isinstance(command, str) else shlex.join(command)
        if not text.strip():
            raise _StartFailure("empty command")
        return text, text.split()[0]
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise _StartFailure(f"cannot split command: {exc}") from exc
    argv = list(command)
    if not argv or not argv[0]:
        raise _StartFailure("empty command")
    return argv, argv[0]


def launch_env(launch: Launch) -> dict[str, str]:
    """The child's environment: ours, then ``launch.env``, then the TOMLFLOW_* variables."""
    env = dict(os.environ)
    env.update(launch.env)
    env.update(
        TOMLFLOW_EXECUTION_ID=str(launch.execution_id),
        TOMLFLOW_TASK_ID=launch.task_id,
        TOMLFLOW_TOPIC=launch.topic,
        TOMLFLOW_JOB=launch.job,
        TOMLFLOW_INFO=launch.info,
        TOMLFLOW_TASK_TIME=launch.task_time.isoformat() if launch.task_time else "",
        TOMLFLOW_ATTEMPT=str(launch.attempt),
        TOMLFLOW_META=json.dumps(dict(launch.meta), sort_keys=True),
    )
    return env


def _start_error(exc: Exception, program: str, cwd: str | None) -> str:
    if not isinstance(exc, OSError):
        return f"cannot start {program}: {exc}"
    if cwd is not None and exc.filename == cwd:
        return f"bad working directory {cwd}: {exc.strerror}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {program}"
    return f"cannot start {program}: {exc.strerror or exc}"


def _spawn(launch: Launch) -> subprocess.Popen[bytes]:
    """Start the launch's process in a new session; raises _StartFailure."""
    args, program = _popen_args(launch)
    try:
        return subprocess.Popen(
            args,
            shell=launch.shell,
            cwd=launch.cwd,
            env=launch_env(launch),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        raise _StartFailure(_start_error(exc, program, launch.cwd)) from exc


class _Run:
    """Kill switch of one active process, safe to use from any thread.

    Signals go to the process group only until the main process is reaped: until then its pid
    (the group id) cannot be reused, so we never signal a stranger's group.
    """

    def __init__(self, wake_fd: int, kill_grace: float) -> None:
        self._wake_fd = wake_fd
        self._kill_grace = kill_grace
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaped = False
        self.stop_reason: tuple[Result, str] | None = None
        self.kill_at: float | None = None

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._proc = proc
            if self.stop_reason is not None:  # cancelled while starting
                self._signal(signal.SIGTERM)

    def stop(self, result: Result, msg: str) -> None:
        """Ask the group to end (SIGTERM, SIGKILL after the grace); the first reason wins."""
        with self._lock:
            if self.stop_reason is not None or self._reaped:
                return
            self.stop_reason = (result, msg)
            self.kill_at = time.monotonic() + self._kill_grace
            self._signal(signal.SIGTERM)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_fd, b"x")

    def escalate(self, now: float) -> None:
        with self._lock:
            if self.kill_at is not None and now >= self.kill_at:
                self.kill_at = None
                self._signal(signal.SIGKILL)

    def kill(self) -> None:
        with self._lock:
            self._signal(signal.SIGKILL)

    def reap(self) -> int:
        with self._lock:
            assert self._proc is not None
            self._reaped = True
            return self._proc.wait()

    def _signal(self, sig: int) -> None:
        if self._proc is not None and not self._reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """True once ``pid`` has exited; leaves it unreaped (WNOWAIT) so its group id stays ours."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _stream_fd(stream: IO[bytes] | None) -> int:
    assert stream is not None
    return stream.fileno()


class _Worker:
    """A worker thread's reusable selector and wake-up pipe (written by ``_Run.stop``)."""

    def __init__(self) -> None:
        self.selector = selectors.PollSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def close(self) -> None:
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


_EXIT = "exit"
_WAKE = "wake"


class _Pump:
    """Reads one process's pipes until they close and it exits, enforcing timeout and stop."""

    def __init__(
        self, proc: subprocess.Popen[bytes], run: _Run, out: _Output, worker: _Worker
    ) -> None:
        self._proc = proc
        self._run = run
        self._out = out
        self._worker = worker
        self._streams = {_stream_fd(proc.stdout): "stdout", _stream_fd(proc.stderr): "stderr"}
        self._exit_fd = _open_pidfd(proc.pid)
        self._exited = False
        self._drain_until: float | None = None

    def pump(self, timeout: timedelta | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()
        sel = self._worker.selector
        for fd, name in self._streams.items():
            sel.register(fd, selectors.EVENT_READ, name)
        if self._exit_fd is not None:
            sel.register(self._exit_fd, selectors.EVENT_READ, _EXIT)
        sel.register(self._worker.wake_r, selectors.EVENT_READ, _WAKE)
        try:
            while self._streams or not self._exited:
                for key, _ in sel.select(self._wait(deadline)):
                    self._handle(key)
                deadline = self._check(deadline, timeout)
                if self._drained_too_long():
                    break
        finally:
            for key in list(sel.get_map().values()):
                sel.unregister(key.fileobj)
            if self._exit_fd is not None:
                os.close(self._exit_fd)

    def _handle(self, key: selectors.SelectorKey) -> None:
        fd = key.fd
        if key.data == _WAKE:
            with contextlib.suppress(BlockingIOError):
                os.read(fd, _READ_SIZE)
        elif key.data == _EXIT:
            self._worker.selector.unregister(fd)
            self._exited = True
        else:
            chunk = os.read(fd, _READ_SIZE)
            if chunk:
                self._out.feed(key.data, chunk)
            else:
                self._worker.selector.unregister(fd)
                self._out.close(self._streams.pop(fd))

    def _wait(self, deadline: float | None) -> float | None:
        times = [t for t in (deadline, self._run.kill_at, self._drain_until) if t is not None]
        wait = max(0.0, min(times) - time.monotonic()) if times else None
        if self._exit_fd is None and not self._exited:
            wait = _POLL_INTERVAL if wait is None else min(wait, _POLL_INTERVAL)
        return wait

    def _check(self, deadline: float | None, timeout: timedelta | None) -> float | None:
        """Apply exit, timeout and kill escalation; return the deadline still pending."""
        if not self._exited and self._exit_fd is None:
            self._exited = _has_exited(self._proc.pid)
        if self._exited and self._drain_until is None:
            self._drain_until = time.monotonic() + _EXIT_DRAIN
        now = time.monotonic()
        if deadline is not None and timeout is not None and now >= deadline:
            self._run.stop(Result.ERROR, f"timeout after {format_duration(timeout)}")
            deadline = None
        self._run.escalate(now)
        return deadline

    def _drained_too_long(self) -> bool:
        if not self._streams or self._drain_until is None:
            return False
        if time.monotonic() < self._drain_until:
            return False
        self._run.kill()
        self._out.system("process exited but its output stayed open; killed its process group")
        return True


def _decide(out: _Output, returncode: int, stop: tuple[Result, str] | None) -> tuple[Result, str]:
    """The result rules: a stop (timeout/cancel) wins, then an event result, then the exit."""
    if stop is not None:
        return stop
    if out.result is not None:
        return out.result, out.msg or ""
    if returncode == 0:
        return Result.COMPLETE, out.msg or ""
    if returncode < 0:
        return Result.ERROR, f"killed by signal {-returncode}"
    tail = f": {out.last_stderr}" if out.last_stderr else ""
    return Result.ERROR, f"exit code {returncode}{tail}"


class LocalExecutor:
    """Runs launches as child processes, at most ``max_workers`` at a time.

    Each process gets its own session/process group, stdin from /dev/null, piped stdout/stderr
    and the TOMLFLOW_* environment. Timeout and cancel send SIGTERM to the whole group and
    SIGKILL ``kill_grace`` seconds later. Output beyond ``log_cap`` lines per execution is
    drained and dropped after a truncation marker. A launch with a ``callable`` (a Python
    worker) is called on the worker thread instead; like InProcessExecutor, it cannot be
    interrupted by a timeout or cancel.
    """

    def __init__(
        self,
        max_workers: int,
        now: Clock,
        log_cap: int = DEFAULT_LOG_CAP,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._now = now
        self._log_cap = log_cap
        self._kill_grace = kill_grace
        self._board: _Board[_Run] = _Board()
        self._threads = [
            threading.Thread(target=self._work, name=f"tomlflow-exec-{i}", daemon=True)
            for i in range(max_workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, launch: Launch) -> None:
        self._board.add(launch)

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        return self._board.collect(timeout)

    def started(self) -> list[Started]:
        return self._board.drain_started()

    def running(self) -> int:
        return self._board.pending()

    def cancel(self, execution_id: int, reason: str) -> None:
        launch = self._board.withdraw(execution_id)
        if launch is not None:
            at = self._now()
            self._board.report(_outcome(launch, Result.CANCELLED, reason, at, at))
            return
        run = self._board.active(execution_id)
        if run is not None:
            run.stop(Result.CANCELLED, reason)

    def shutdown(self, grace: float) -> list[Outcome]:
        at = self._now()
        for launch in self._board.close():
            msg = "executor shut down before it started"
            self._board.report(_outcome(launch, Result.CANCELLED, msg, at, at))
        outcomes = _collect_until_idle(self, self._board, grace)
        msg = f"executor shut down: still running after {format_duration(timedelta(seconds=grace))}"
        for run in self._board.actives():
            run.stop(Result.CANCELLED, msg)
        outcomes += _collect_until_idle(self, self._board, None)
        for thread in self._threads:
            thread.join()
        return outcomes

    def _work(self) -> None:
        worker = _Worker()
        try:
            while (item := self._board.take(self._new_run(worker))) is not None:
                launch, run = item
                self._board.finish(launch.execution_id, self._guarded(launch, run, worker))
        finally:
            worker.close()

    def _new_run(self, worker: _Worker) -> Callable[[Launch], _Run]:
        return lambda _launch: _Run(worker.wake_w, self._kill_grace)

    def _guarded(self, launch: Launch, run: _Run, worker: _Worker) -> Outcome:
        # A bug here must not kill the worker thread: the engine would wait forever.
        started_at = self._now()
        try:
            return self._execute(launch, run, worker, started_at)
        except Exception as exc:
            log.exception("executor failure on execution %s", launch.execution_id)
            msg = f"executor failure: {type(exc).__name__}: {exc}"
            return _outcome(launch, Result.ERROR, msg, started_at, self._now())

    def _execute(self, launch: Launch, run: _Run, worker: _Worker, started_at: datetime) -> Outcome:
        if launch.callable is not None:  # a Python worker: called on this thread, no process
            self._board.note_started(launch.execution_id, None, started_at)
            result, msg, meta = _call(launch)
            return _outcome(launch, result, msg, started_at, self._now(), meta=meta)
        try:
            proc = _spawn(launch)
        except _StartFailure as failure:
            self._board.note_started(launch.execution_id, None, started_at)
            return _outcome(launch, Result.ERROR, failure.msg, started_at, self._now())
        run.attach(proc)
        self._board.note_started(launch.execution_id, proc.pid, started_at)
        out = _Output(launch.execution_id, self._log_cap, self._now)
        try:
            _Pump(proc, run, out, worker).pump(launch.timeout)
        except BaseException:
            run.kill()  # so the reap below cannot block on a live process
            raise
        finally:
            returncode = run.reap()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        result, msg = _decide(out, returncode, run.stop_reason)
        if run.stop_reason is not None:
            out.system(msg)
        return _outcome(
            launch,
            result,
            msg,
            started_at,
            self._now(),
            exit_code=returncode,
            meta=out.meta,
            logs=out.logs,
            pid=proc.pid,
        )


# ---------------------------------------------------------------------------------------------
# InProcessExecutor


@dataclass
class _Call:
    launch: Launch
    started_at: datetime
    deadline: float | None


def _call_notice(call: _Call) -> Started:
    return (call.launch.execution_id, None, call.started_at)


def _as_reply(value: object) -> Reply:
    """Normalise what a callable returned; raises TypeError for anything else."""
    if value is None:
        return Reply()
    if isinstance(value, Result):
        return Reply(value)
    if isinstance(value, Reply):
        return value
    raise TypeError(f"callable returned {type(value).__name__}; expected Result, Reply or None")


class InProcessExecutor:
    """Calls ``launch.callable(launch)`` on up to ``max_workers`` threads.

    The callable returns a ``Result``, a ``Reply`` or ``None`` (complete); an exception it raises
    is an ERROR with msg ``ExcType: message``. A thread cannot be interrupted, so cancel and
    timeout report at once while the call runs on and its eventual return value is dropped;
    its thread stays busy until then. Timeouts are noticed by ``collect``.
    """

    def __init__(self, max_workers: int, now: Clock) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._now = now
        self._board: _Board[_Call] = _Board()
        for i in range(max_workers):
            name = f"tomlflow-call-{i}"
            threading.Thread(target=self._work, name=name, daemon=True).start()

    def submit(self, launch: Launch) -> None:
        self._board.add(launch)

    def started(self) -> list[Started]:
        return self._board.drain_started()

    def running(self) -> int:
        return self._board.pending()

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            nearest = self._expire_overdue()
            waits = [t - time.monotonic() for t in (end, nearest) if t is not None]
            wait = max(0.0, min(waits)) if waits else None
            outcomes = self._board.collect(wait, until_activation=True)
            if outcomes or not self._board.pending():
                return outcomes
            if end is not None and time.monotonic() >= end:
                return outcomes

    def cancel(self, execution_id: int, reason: str) -> None:
        at = self._now()
        launch = self._board.withdraw(execution_id)
        if launch is not None:
            self._board.report(_outcome(launch, Result.CANCELLED, reason, at, at))
            return
        call = self._board.active(execution_id)
        if call is not None:
            outcome = _outcome(call.launch, Result.CANCELLED, reason, call.started_at, at)
            self._board.finish(execution_id, outcome)

    def shutdown(self, grace: float) -> list[Outcome]:
        for launch in self._board.close():
            at = self._now()
            msg = "executor shut down before it started"
            self._board.report(_outcome(launch, Result.CANCELLED, msg, at, at))
        outcomes = _collect_until_idle(self, self._board, grace)
        msg = f"executor shut down: still running after {format_duration(timedelta(seconds=grace))}"
        for call in self._board.actives():
            self.cancel(call.launch.execution_id, msg)
        return outcomes + self._board.collect(0)

    def _expire_overdue(self) -> float | None:
        """End overdue calls with a timeout ERROR; return the nearest deadline left."""
        nearest: float | None = None
        for call in self._board.actives():
            if call.deadline is None:
                continue
            if time.monotonic() >= call.deadline:
                assert call.launch.timeout is not None
                msg = f"timeout after {format_duration(call.launch.timeout)}"
                outcome = _outcome(call.launch, Result.ERROR, msg, call.started_at, self._now())
                self._board.finish(call.launch.execution_id, outcome)
            elif nearest is None or call.deadline < nearest:
                nearest = call.deadline
        return nearest

    def _start(self, launch: Launch) -> _Call:
        timeout = launch.timeout
        deadline = None if timeout is None else time.monotonic() + timeout.total_seconds()
        return _Call(launch, self._now(), deadline)

    def _work(self) -> None:
        while (item := self._board.take(self._start, _call_notice)) is not None:
            launch, call = item
            result, msg, meta = _call(launch)
            outcome = _outcome(launch, result, msg, call.started_at, self._now(), meta=meta)
            self._board.finish(launch.execution_id, outcome)


def _call(launch: Launch) -> tuple[Result, str, Mapping[str, str]]:
    """Run ``launch.callable`` on this thread; its exception or odd return is an ERROR."""
    if launch.callable is None:
        return Result.ERROR, "launch has no callable", {}
    try:
        reply = _as_reply(launch.callable(launch))
    except Exception as exc:  # the callable's failure is its result, by contract
        return Result.ERROR, f"{type(exc).__name__}: {exc}", {}
    return reply.result, reply.msg, reply.meta


def kill_orphan(pid: int, execution_id: int) -> bool:
    """Kill the process group a previous scheduler left running for ``execution_id``.

    The group is killed only if its leader still carries ``TOMLFLOW_EXECUTION_ID`` for this
    execution (read from /proc), so a recycled pid is never signalled. True if it was killed.
    """
    try:
        with open(f"/proc/{pid}/environ", "rb") as env:
            marker = f"TOMLFLOW_EXECUTION_ID={execution_id}".encode()
            if marker not in env.read().split(b"\0"):
                return False
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        return False
    return True
