"""The spool: one folder of receipts per database, where every execution's truth outlives us.

For execution ``N`` the folder holds:

- ``N.out`` / ``N.err``: the command's stdout and stderr, appended to by the command itself;
- ``N.pid``: the supervisor's pid, written by the supervisor before the command starts;
- ``N.rc``: the command's exit status and a newline, written by the supervisor when it ended;
- ``N.stop``: why the scheduler signalled it (``result<TAB>msg``), written BEFORE the signal.

Files are created by the scheduler (``open_output``) or the supervisor; they are deleted only
by ``release`` (after the outcome is committed) or ``sweep`` (at start, for executions that are
no longer running), so a scheduler that dies at any moment leaves the truth behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scheduler.executors.base import Result

SUFFIXES = (".out", ".err", ".pid", ".rc", ".stop")
EXECUTION_VAR = "TOMLFLOW_EXECUTION_ID"
SPOOL_VAR = "TOMLFLOW_SPOOL"


@dataclass(frozen=True)
class Receipt:
    """The exit status the supervisor wrote, and when (the file's modification time)."""

    status: int
    at: datetime


class Spool:
    """The receipts folder ``path`` (created on demand, mode 0700)."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()
        self.dir = str(self.path)
        self._made = False

    def prefix(self, execution_id: int) -> str:
        """The path every file of ``execution_id`` starts with (add a suffix)."""
        return f"{self.dir}/{execution_id}"

    def ensure(self) -> None:
        if not self._made:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._made = True

    def open_output(self, execution_id: int) -> tuple[int, int]:
        """Create (emptied) ``.out`` and ``.err`` opened O_APPEND for writing; return their fds."""
        self.ensure()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        prefix = self.prefix(execution_id)
        out = os.open(prefix + ".out", flags, 0o600)
        try:
            return out, os.open(prefix + ".err", flags, 0o600)
        except OSError:
            os.close(out)
            raise

    def has_output(self, execution_id: int) -> bool:
        return os.path.exists(self.prefix(execution_id) + ".out")

    def write_stop(self, execution_id: int, result: Result, msg: str) -> None:
        """Note why we are about to signal ``execution_id``; never raises."""
        with contextlib.suppress(OSError):
            Path(self.prefix(execution_id) + ".stop").write_text(f"{result.value}\t{msg}\n")

    def stop(self, execution_id: int) -> tuple[Result, str] | None:
        text = self._read(execution_id, ".stop")
        if text is None or "\t" not in text:
            return None
        result, _, msg = text.rstrip("\n").partition("\t")
        try:
            return Result(result), msg
        except ValueError:
            return None

    def receipt(self, execution_id: int) -> Receipt | None:
        """The exit status, once the supervisor wrote all of it (a trailing newline)."""
        try:  # os-level: a buffered text file costs four more system calls per execution
            fd = os.open(self.prefix(execution_id) + ".rc", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            data = os.read(fd, 64)
            mtime = os.fstat(fd).st_mtime
        except OSError:
            return None
        finally:
            os.close(fd)
        if not data.endswith(b"\n") or not data.strip().isdigit():
            return None
        return Receipt(int(data), datetime.fromtimestamp(mtime, UTC))

    def supervisor_pid(self, execution_id: int) -> int | None:
        text = self._read(execution_id, ".pid")
        return int(text) if text and text.strip().isdigit() else None

    def release(self, execution_ids: Iterable[int]) -> None:
        """Delete every file of these executions (their outcome is committed)."""
        for execution_id in execution_ids:
            prefix = self.prefix(execution_id)
            for suffix in SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(prefix + suffix)

    def sweep(self, keep: Iterable[int]) -> int:
        """Delete the files of every execution not in ``keep``; return how many executions."""
        kept = set(keep)
        gone = {i for i in self.ids() if i not in kept}
        self.release(gone)
        return len(gone)

    def ids(self) -> set[int]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return set()
        stems = (name.partition(".")[0] for name in names)
        return {int(stem) for stem in stems if stem.isdigit()}

    def tag(self, execution_id: int) -> tuple[bytes, bytes]:
        """The two environment entries that mark a process as this execution's."""
        return (
            f"{EXECUTION_VAR}={execution_id}".encode(),
            f"{SPOOL_VAR}={self.dir}".encode(),
        )

    def carries_tag(self, pid: int, execution_id: int) -> bool:
        """Whether process ``pid`` is alive (not a zombie) and carries this execution's tag."""
        return _has_tag(pid, self.tag(execution_id))

    def tagged(self, execution_id: int) -> list[int]:
        """Every live process whose environment carries this execution's tag."""
        tag = self.tag(execution_id)
        return [pid for pid in _pids() if pid != os.getpid() and _has_tag(pid, tag)]

    def leader(self, execution_id: int) -> int | None:
        """The process group of a live tagged process (its supervisor), found by a /proc scan:
        for a supervisor that has not written its pid file yet."""
        for pid in self.tagged(execution_id):
            with contextlib.suppress(OSError):
                return os.getpgid(pid)
        return None

    def kill_tagged(self, execution_id: int, sig: int) -> int:
        """Send ``sig`` to every tagged process (a ``setsid`` grandchild too); return how many."""
        sent = 0
        for pid in self.tagged(execution_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def _read(self, execution_id: int, suffix: str) -> str | None:
        try:
            return Path(self.prefix(execution_id) + suffix).read_text()
        except (OSError, UnicodeDecodeError):
            return None


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                yield int(name)


def _has_tag(pid: int, tag: tuple[bytes, bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            entries = set(file.read().split(b"\0"))
        with open(f"/proc/{pid}/stat", "rb") as file:
            state = file.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z" and all(entry in entries for entry in tag)
