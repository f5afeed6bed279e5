"""Running ONE command: its process group, timeout, output capture and cap, ``__WF_EVENT__``
lines, the result rules, and killing it.

The local executor calls this on its worker threads; anything else that runs a phase's command
(a remote worker) calls the same code rather than a copy of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import IO

from scheduler.durations import format_duration
from scheduler.executors.base import Clock, Launch, LogLine, Outcome, Result, make_outcome

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

_EVENT_RESULTS = frozenset({Result.COMPLETE, Result.ERROR, Result.WARN, Result.ALERT})


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


class Run:
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


class Worker:
    """A worker thread's reusable selector and wake-up pipe (written by ``Run.stop``)."""

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
        self, proc: subprocess.Popen[bytes], run: Run, out: _Output, worker: Worker
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


def run_command(
    launch: Launch,
    run: Run,
    worker: Worker,
    now: Clock,
    log_cap: int,
    on_start: Callable[[int | None, datetime], None],
) -> Outcome:
    """Run ``launch.command`` to its end on this thread and return how it ended.

    ``on_start(pid, started_at)`` is called once the process exists (pid ``None`` when it could
    not start, which is an ERROR outcome). ``run`` is the kill switch other threads may pull
    (cancel); the timeout is enforced here. Never raises for a failing command.
    """
    started_at = now()
    try:
        proc = _spawn(launch)
    except _StartFailure as failure:
        on_start(None, started_at)
        return make_outcome(launch, Result.ERROR, failure.msg, started_at, now())
    run.attach(proc)
    on_start(proc.pid, started_at)
    out = _Output(launch.execution_id, log_cap, now)
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
    return make_outcome(
        launch,
        result,
        msg,
        started_at,
        now(),
        exit_code=returncode,
        meta=out.meta,
        logs=out.logs,
        pid=proc.pid,
    )
