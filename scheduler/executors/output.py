"""A command's output bytes → capped log lines, with ``__WF_EVENT__`` lines applied.

The caps (``Caps``) bound what one execution stores: at most ``lines`` lines and ``bytes`` bytes,
one line at most ``line`` bytes. Past a cap the first half is kept as it came, the last half is
kept in a bounded window, and the lines between are counted and dropped: at the end a marker
``... N lines (S) omitted ...`` and the window follow the first half. A line longer than
``line`` is cut with a marker; its rest is never held in memory. Events are honoured wherever
they fall, so a chatty command still reports its result.

Lines are handed out as they become final (``take``): the first half at once, the window only
at ``finish``. A reader on another thread may ``take`` while the owner feeds: one lock guards both.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from scheduler.executors.base import LogLine, Result

EVENT_PREFIX = "__WF_EVENT__:"
"""A child's output line starting with this carries a JSON object: ``result``, ``msg``, ``meta``."""

_EVENT_RESULTS = frozenset({Result.COMPLETE, Result.ERROR, Result.WARN, Result.ALERT})
STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class Caps:
    """What one execution's stored output may hold (``[scheduler] output_max_*``)."""

    lines: int = 10_000
    bytes: int = 10 * 1024 * 1024
    line: int = 64 * 1024


def size_text(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``12 KB``, ``67 MB`` (powers of 1000)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n} B"


class _Stream:
    """One stream's unfinished line: at most ``limit`` bytes kept, the rest only counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.cut = 0  # bytes of the current line dropped past the limit

    def add(self, part: bytes) -> None:
        room = self.limit - len(self.buf)
        if room > 0:
            self.buf += part[:room]
        self.cut += max(0, len(part) - max(room, 0))

    def pop(self) -> tuple[bytes, int]:
        line, cut = bytes(self.buf), self.cut
        self.buf.clear()
        self.cut = 0
        return line, cut


class Output:
    """The output of one execution, fed in chunks per stream; see the module docstring."""

    def __init__(self, execution_id: int, caps: Caps, now: Callable[[], datetime]) -> None:
        self._execution_id = execution_id
        self._caps = caps
        self._now = now
        self._lock = threading.Lock()
        self._streams = {name: _Stream(caps.line) for name in STREAMS}
        self._ready: list[LogLine] = []  # final lines not taken yet
        self._seq = 0
        self._head_lines = self._head_bytes = 0
        self._tail: deque[tuple[str, str, datetime, int]] = deque()
        self._tail_bytes = 0
        self._omitted_lines = self._omitted_bytes = 0
        self.result: Result | None = None
        self.msg: str | None = None
        self.meta: dict[str, str] = {}
        self.last_stderr = ""

    def feed(self, stream: str, chunk: bytes) -> None:
        """Add bytes read from ``stream`` (``stdout`` or ``stderr``)."""
        with self._lock:
            state = self._streams[stream]
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                state.add(chunk[start:end])
                self._line(stream, *state.pop())
                start = end + 1
            state.add(chunk[start:])

    def close(self, stream: str) -> None:
        """The stream ended: a last line without a newline still counts."""
        with self._lock:
            state = self._streams[stream]
            if state.buf or state.cut:
                self._line(stream, *state.pop())

    def system(self, text: str) -> None:
        """Record a note of ours; never subject to the caps."""
        with self._lock:
            self._emit("system", text, self._now())

    @property
    def omitting(self) -> bool:
        """Whether the first half is full: later lines go to the window, or are dropped."""
        return bool(self._tail) or self._omitted_lines > 0

    def take(self) -> list[LogLine]:
        """Return and forget the lines that became final since the last call."""
        with self._lock:
            ready, self._ready = self._ready, []
            return ready

    def finish(self) -> None:
        """Close both streams and release the kept last lines after the omission marker."""
        for stream in STREAMS:
            self.close(stream)
        with self._lock:
            if self._omitted_lines:
                omitted = f"{self._omitted_lines} lines ({size_text(self._omitted_bytes)})"
                self._emit("system", f"... {omitted} omitted ...", self._now())
            while self._tail:
                stream, text, ts, _ = self._tail.popleft()
                self._emit(stream, text, ts)

    # -- under the lock -----------------------------------------------------------------------

    def _line(self, stream: str, raw: bytes, cut: int) -> None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        if cut:
            text += f" ... [line cut: {size_text(cut)} more]"
        elif text.startswith(EVENT_PREFIX):
            problem = self._event(text[len(EVENT_PREFIX) :])
            self._keep(stream, text)
            if problem:
                self._emit("system", f"ignored {EVENT_PREFIX} line: {problem}", self._now())
            return
        if stream == "stderr" and text.strip():
            self.last_stderr = text.strip()
        self._keep(stream, text)

    def _keep(self, stream: str, text: str) -> None:
        size = len(text.encode("utf-8", errors="replace")) + 1
        caps = self._caps
        if (
            not self._tail
            and self._head_lines < caps.lines // 2
            and self._head_bytes + size <= caps.bytes // 2
        ):
            self._head_lines += 1
            self._head_bytes += size
            self._emit(stream, text, self._now())
            return
        self._tail.append((stream, text, self._now(), size))
        self._tail_bytes += size
        tail_lines, tail_bytes = caps.lines - caps.lines // 2, caps.bytes - caps.bytes // 2
        while self._tail and (len(self._tail) > tail_lines or self._tail_bytes > tail_bytes):
            dropped = self._tail.popleft()[3]
            self._tail_bytes -= dropped
            self._omitted_lines += 1
            self._omitted_bytes += dropped

    def _emit(self, stream: str, text: str, ts: datetime) -> None:
        self._seq += 1
        self._ready.append(LogLine(self._execution_id, self._seq, ts, stream, text))

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
