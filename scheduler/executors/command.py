"""Running ONE command: its supervisor, timeout, output capture and caps, ``__WF_EVENT__`` lines,
the result rules, and killing it.

Every command is started through a tiny POSIX ``/bin/sh`` supervisor (no Python interpreter per
execution), the leader of a new session and process group. The supervisor appends the command's
stdout and stderr to the spool files, writes its own pid first and the command's exit status
last, and traps TERM/INT/HUP with a handler (reset on exec, so the command still gets the
default action) so that a signal to the group ends the command and the receipt is still
written. Paths and argv are positional parameters, never interpolated into the script. With
``shell`` the line runs as ``( eval "$cmd" )``, so a user's ``exit`` cannot skip the receipt.

The scheduler learns of the end through a pidfd on the supervisor, reads the output files while
the command runs and at its end, and reads the exit status from the receipt. The same code follows
an adopted supervisor a previous scheduler started (``follow_adopted``) and parses the receipts
of one that ended while no scheduler ran (``replay``). The local executor calls this on its
worker threads; anything else that runs a phase's command calls it too, not a copy of it.

Exit statuses: the shell reports a command killed by signal N as 128+N, and so do we (as
``-N``, "killed by signal N") whenever the status is 128+N for a real signal number. A command
that itself exits with such a status (``exit 130``) reads the same way: the receipt cannot tell.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler.durations import format_duration
from scheduler.executors.base import Clock, Launch, Orphan, Outcome, Result, make_outcome
from scheduler.executors.output import STREAMS, Caps, Output
from scheduler.executors.spool import SPOOL_VAR, Spool

DEFAULT_KILL_GRACE = 2.0
# How often a running command's output files are read (live logs are at most this much later).
READ_EVERY = 0.25
# Without pidfd we learn of the exit by polling this often.
_POLL_INTERVAL = 0.05
_READ_SIZE = 1 << 16
_SIGNALS = range(1, signal.NSIG)

SUPERVISOR_NAME = "tomlflow-supervisor"
SUPERVISOR = """trap : TERM INT HUP
p=$1; m=$2; shift 2
echo $$ >"$p.pid"
if [ "$m" = shell ]; then ( eval "$1" ); else "$@"; fi
echo $? >"$p.rc"
"""
"""``sh -c SUPERVISOR tomlflow-supervisor PREFIX MODE ARGV...``; MODE ``shell`` or ``exec``."""

UNKNOWN_EXIT = "outcome unknown: the process ended without leaving an exit status"
UNKNOWN_DEAD = (
    "outcome unknown: the process ended while no scheduler was running and left no exit status"
)


class StartFailure(Exception):
    """The launch cannot become a process; ``msg`` is the outcome message."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


# -- starting ------------------------------------------------------------------------------------


def supervisor_args(launch: Launch, env: dict[str, str]) -> list[str]:
    """MODE and ARGV for the supervisor; raises StartFailure for what cannot start at all."""
    command = launch.command
    if launch.cwd is not None and not os.path.isdir(launch.cwd):
        raise StartFailure(f"bad working directory {launch.cwd}: No such file or directory")
    if launch.shell:
        text = command if isinstance(command, str) else shlex.join(command)
        if not text.strip():
            raise StartFailure("empty command")
        return ["shell", text]
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:
            raise StartFailure(f"cannot split command: {exc}") from exc
    argv = list(command)
    if not argv or not argv[0]:
        raise StartFailure("empty command")
    _check_program(argv[0], env, launch.cwd)
    return ["exec", *argv]


def _check_program(program: str, env: dict[str, str], cwd: str | None) -> None:
    """What exec would refuse, said before a process exists (the supervisor can't say it)."""
    if "/" in program:
        path = os.path.join(cwd or os.getcwd(), program)
        if not os.path.exists(path):
            raise StartFailure(f"command not found: {program}")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise StartFailure(f"permission denied: {program}")
    else:
        search = env.get("PATH", os.defpath)
        if not _runnable(_which(program, search)):
            _which.cache_clear()  # gone since, or never there: look again
            if _which(program, search) is None:
                raise StartFailure(f"command not found: {program}")


@functools.lru_cache(maxsize=256)
def _which(program: str, search: str) -> str | None:
    """``shutil.which`` remembered: a PATH search costs a stat per folder on every start, each
    a release of the interpreter lock. What it found is trusted only while ``_runnable``."""
    return shutil.which(program, path=search)


def _runnable(path: str | None) -> bool:
    return path is not None and os.access(path, os.X_OK) and not os.path.isdir(path)


def launch_env(launch: Launch, spool: Spool | None = None) -> dict[str, str]:
    """The child's environment: ours, then ``launch.env``, then the TOMLFLOW_* variables.

    ``TOMLFLOW_EXECUTION_ID`` with ``TOMLFLOW_SPOOL`` identify every process of the execution,
    even when two databases on one host share execution ids.
    """
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
    if spool is not None:
        env[SPOOL_VAR] = str(spool.path)
    return env


def spawn(launch: Launch, spool: Spool) -> subprocess.Popen[bytes]:
    """Start the launch's supervisor in a new session; raises StartFailure."""
    env = launch_env(launch, spool)
    args = supervisor_args(launch, env)
    try:
        out, err = spool.open_output(launch.execution_id)
    except OSError as exc:
        raise StartFailure(f"cannot write to the spool {spool.path}: {exc.strerror}") from exc
    prefix = spool.prefix(launch.execution_id)
    try:
        return subprocess.Popen(
            ["/bin/sh", "-c", SUPERVISOR, SUPERVISOR_NAME, prefix, *args],
            cwd=launch.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    except OSError as exc:
        if launch.cwd is not None and exc.filename == launch.cwd:
            raise StartFailure(f"bad working directory {launch.cwd}: {exc.strerror}") from exc
        raise StartFailure(f"cannot start the supervisor: {exc.strerror or exc}") from exc
    finally:
        os.close(out)
        os.close(err)


# -- the kill switch -----------------------------------------------------------------------------


class Run:
    """Kill switch of one execution, safe to use from any thread; ``output`` once it runs.

    A stop writes the reason to the spool BEFORE signalling, so a scheduler that dies mid-kill
    still leaves the truth. Signals go to the supervisor's process group, and to every process
    carrying this execution's tag (a ``setsid`` grandchild too), only while the supervisor has
    not ended: until then its pid (the group id) cannot belong to a stranger.
    """

    def __init__(self, execution_id: int, spool: Spool, wake_fd: int, kill_grace: float) -> None:
        self.execution_id = execution_id
        self._spool = spool
        self._wake_fd = wake_fd
        self._kill_grace = kill_grace
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._ended = False
        self.output: Output | None = None
        self.stop_reason: tuple[Result, str] | None = None
        self.kill_at: float | None = None

    def attach(self, pid: int) -> None:
        with self._lock:
            self._pid = pid
            if self.stop_reason is not None:  # stopped while starting
                self._signal(signal.SIGTERM)

    def stop(self, result: Result, msg: str) -> None:
        """Ask it to end (SIGTERM, SIGKILL after the grace); the first reason wins."""
        with self._lock:
            if self.stop_reason is not None or self._ended:
                return
            self.stop_reason = (result, msg)
            self.kill_at = time.monotonic() + self._kill_grace
            self._spool.write_stop(self.execution_id, result, msg)
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

    def end(self) -> None:
        """The supervisor ended: kill what is left of its group, then never signal again."""
        with self._lock:
            if self._pid is not None and not self._ended:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._pid, signal.SIGKILL)
            self._ended = True

    def _signal(self, sig: int) -> None:
        if self._pid is None or self._ended:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, sig)
        self._spool.kill_tagged(self.execution_id, sig)


class Waker:
    """A thread's reusable selector and the wake-up pipe ``Run.stop`` writes to."""

    def __init__(self) -> None:
        self.selector = selectors.PollSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def close(self) -> None:
        self.selector.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


# -- following a running supervisor ------------------------------------------------------------


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _child_exited(pid: int) -> bool:
    """True once child ``pid`` has exited; leaves it unreaped (WNOWAIT) so its group id stays."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class _Tails:
    """Reads the ``.out`` and ``.err`` spool files of one execution from where it last stopped.

    Past the output cap, the bytes already read that can no longer be among the kept last lines
    are punched out of the file (``FALLOC_FL_PUNCH_HOLE``: the writer's O_APPEND offset is
    untouched, the disk blocks are freed), so a runaway command cannot fill the disk through
    its spool file. A reader that may meet such holes (adoption, replay) skips them; what was
    punched is lost to it, so after a crash the omission marker undercounts and an event line
    in the punched middle is not seen.
    """

    def __init__(
        self, spool: Spool, execution_id: int, caps: Caps | None = None, holes: bool = False
    ) -> None:
        prefix = spool.prefix(execution_id)
        self._fds: dict[str, int] = {}
        self._caps = caps
        self._holes = holes
        self._read = dict.fromkeys(STREAMS, 0)
        self._keep_until: dict[str, int] = {}  # per stream: the head's bytes end here
        self._punched = dict.fromkeys(STREAMS, 0)
        flags = (os.O_RDWR if caps else os.O_RDONLY) | os.O_CLOEXEC
        for stream, suffix in zip(STREAMS, (".out", ".err"), strict=True):
            with contextlib.suppress(FileNotFoundError):
                self._fds[stream] = os.open(prefix + suffix, flags)

    def read(self, out: Output) -> None:
        for stream, fd in self._fds.items():
            if self._holes:
                _skip_hole(fd)
            while chunk := os.read(fd, _READ_SIZE):
                head = self._read[stream]
                out.feed(stream, chunk)
                self._read[stream] += len(chunk)
                if self._caps is not None and out.omitting:
                    self._keep_until.setdefault(stream, head)  # the head ends in this chunk
                    self._trim(stream, fd)

    def _trim(self, stream: str, fd: int) -> None:
        assert self._caps is not None
        start = self._keep_until[stream]
        # The kept last lines are at most bytes/2 long, a cut line keeps at most `line` bytes.
        end = self._read[stream] - self._caps.bytes // 2 - 2 * self._caps.line
        start = max(start, self._punched[stream])
        if end - start >= _PUNCH_AT_LEAST and punch_hole(fd, start, end - start):
            self._punched[stream] = end

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


_PUNCH_AT_LEAST = 1 << 20
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the disk blocks of ``length`` bytes at ``offset`` (they read as zeros after);
    False where the file system or platform cannot."""
    libc = _libc()
    if libc is None:
        return False
    flags = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    result = libc.fallocate(fd, flags, ctypes.c_int64(offset), ctypes.c_int64(length))
    return bool(result == 0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        return libc
    except (OSError, AttributeError):
        return None


def _skip_hole(fd: int) -> None:
    """Move past a punched hole at the current offset, if there is one."""
    with contextlib.suppress(OSError, AttributeError):  # ENXIO: no data after here
        here = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, os.lseek(fd, here, os.SEEK_DATA), os.SEEK_SET)


_EXIT = "exit"
_WAKE = "wake"


def _follow(
    exited: Callable[[], bool],
    exit_fd: int | None,
    tails: _Tails,
    out: Output,
    run: Run,
    waker: Waker,
    timeout: tuple[float, timedelta] | None,
) -> None:
    """Read output until the supervisor exits, enforcing ``timeout`` (monotonic deadline and the
    configured duration) and a stop's escalation."""
    sel = waker.selector
    sel.register(waker.wake_r, selectors.EVENT_READ, _WAKE)
    if exit_fd is not None:
        sel.register(exit_fd, selectors.EVENT_READ, _EXIT)
    try:
        done = False
        while not done:
            deadline = timeout[0] if timeout and run.stop_reason is None else None
            times = [t for t in (deadline, run.kill_at) if t is not None]
            wait = min([READ_EVERY, *(max(0.0, t - time.monotonic()) for t in times)])
            if exit_fd is None:
                wait = min(wait, _POLL_INTERVAL)
            for key, _ in sel.select(wait):
                if key.data == _WAKE:
                    with contextlib.suppress(BlockingIOError):
                        os.read(key.fd, _READ_SIZE)
                else:
                    done = True
            done = done or (exit_fd is None and exited())
            if not done:  # at the end the caller reads what is left, once
                tails.read(out)
            now = time.monotonic()
            if deadline is not None and timeout is not None and now >= deadline:
                run.stop(Result.ERROR, f"timeout after {format_duration(timeout[1])}")
            run.escalate(now)
    finally:
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)


def exit_code_of(status: int | None) -> int | None:
    """A receipt's status as we report it: ``-N`` when it is 128+N for a signal number N."""
    if status is not None and status - 128 in _SIGNALS:
        return -(status - 128)
    return status


def decide(
    out: Output, exit_code: int | None, stop: tuple[Result, str] | None
) -> tuple[Result, str]:
    """The result rules: a stop (timeout/cancel) wins, then an event result, then the exit."""
    if stop is not None:
        return stop
    if out.result is not None:
        return out.result, out.msg or ""
    if exit_code is None:
        return Result.ERROR, UNKNOWN_EXIT
    if exit_code == 0:
        return Result.COMPLETE, out.msg or ""
    if exit_code < 0:
        return Result.ERROR, f"killed by signal {-exit_code}"
    tail = f": {out.last_stderr}" if out.last_stderr else ""
    return Result.ERROR, f"exit code {exit_code}{tail}"


def _ended(
    execution_id: int,
    out: Output,
    exit_code: int | None,
    stop: tuple[Result, str] | None,
    times: tuple[datetime, datetime],
    pid: int | None,
) -> Outcome:
    result, msg = decide(out, exit_code, stop)
    out.finish()
    if stop is not None:
        out.system(msg)
    return make_outcome(
        execution_id,
        result,
        msg,
        times[0],
        times[1],
        exit_code=exit_code,
        meta=out.meta,
        logs=tuple(out.take()),
        pid=pid,
    )


def _deadline(timeout: timedelta | None, spent: float = 0.0) -> tuple[float, timedelta] | None:
    if timeout is None:
        return None
    return time.monotonic() + timeout.total_seconds() - spent, timeout


def run_command(
    launch: Launch,
    run: Run,
    spool: Spool,
    waker: Waker,
    now: Clock,
    caps: Caps,
    on_start: Callable[[int | None, datetime], None],
) -> Outcome:
    """Run ``launch.command`` under a supervisor to its end on this thread; return how it ended.

    ``on_start(pid, started_at)`` is called once the supervisor exists (pid ``None`` when nothing
    could start, which is an ERROR outcome). ``run`` is the kill switch other threads may pull
    (cancel); the timeout is enforced here. The spool files stay (see ``Spool.release``).
    Never raises for a failing command.
    """
    started_at = now()
    try:
        proc = spawn(launch, spool)
    except StartFailure as failure:
        on_start(None, started_at)
        return make_outcome(launch.execution_id, Result.ERROR, failure.msg, started_at, now())
    pidfd = open_pidfd(proc.pid)
    out = Output(launch.execution_id, caps, now)
    run.output = out
    run.attach(proc.pid)
    on_start(proc.pid, started_at)
    tails = _Tails(spool, launch.execution_id, caps)
    try:
        exited = lambda: _child_exited(proc.pid)  # noqa: E731
        _follow(exited, pidfd, tails, out, run, waker, _deadline(launch.timeout))
    except BaseException:
        run.kill()  # so the reap below cannot block on a live process
        raise
    finally:
        run.end()
        status = proc.wait()
        tails.read(out)
        tails.close()
        if pidfd is not None:
            os.close(pidfd)
    receipt = spool.receipt(launch.execution_id)
    code = exit_code_of(receipt.status) if receipt else status
    return _ended(launch.execution_id, out, code, run.stop_reason, (started_at, now()), proc.pid)


def follow_adopted(
    orphan: Orphan,
    pid: int,
    pidfd: int,
    run: Run,
    spool: Spool,
    waker: Waker,
    now: Clock,
    caps: Caps,
) -> Outcome:
    """Follow supervisor ``pid`` that a previous scheduler started: its output from the start,
    its timeout counted from ``orphan.started_at``, its exit status from the receipt."""
    eid = orphan.execution_id
    started_at = orphan.started_at or now()
    out = Output(eid, caps, now)
    run.output = out
    run.attach(pid)
    spent = (now() - started_at).total_seconds()
    tails = _Tails(spool, eid, caps, holes=True)
    try:
        exited = lambda: not spool.carries_tag(pid, eid)  # noqa: E731
        _follow(exited, pidfd, tails, out, run, waker, _deadline(orphan.timeout, spent))
    finally:
        run.end()
        tails.read(out)
        tails.close()
        os.close(pidfd)
    receipt = spool.receipt(eid)
    code = exit_code_of(receipt.status) if receipt else None
    ended_at = receipt.at if receipt else now()
    return _ended(eid, out, code, run.stop_reason or spool.stop(eid), (started_at, ended_at), pid)


def replay(orphan: Orphan, spool: Spool, now: datetime, caps: Caps) -> Outcome:
    """The outcome of an execution whose supervisor ended while no scheduler ran, from its
    receipts: output parsed with the same caps and event rules, the exit status and its time,
    a stop reason if a scheduler signalled it. Without an exit status (and no stop or event
    result) it is an ERROR saying the outcome is unknowable."""
    eid = orphan.execution_id
    receipt = spool.receipt(eid)
    ended_at = receipt.at if receipt else now
    out = Output(eid, caps, lambda: ended_at)
    tails = _Tails(spool, eid, holes=True)
    try:
        tails.read(out)
    finally:
        tails.close()
    code = exit_code_of(receipt.status) if receipt else None
    stop = spool.stop(eid)
    if receipt is None and stop is None and out.result is None:
        stop = (Result.ERROR, UNKNOWN_DEAD)
    pid = spool.supervisor_pid(eid) or orphan.pid
    return _ended(eid, out, code, stop, (orphan.started_at or ended_at, ended_at), pid)
