"""Durations in Go syntax (``1h30m``, ``-4h``, ``250ms``, ``1.5h``), plus ``d`` for days."""

from __future__ import annotations

import re
from datetime import timedelta

from scheduler.errors import DurationError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
# ASCII digits only: "\d" would also take other scripts' digits, which Go rejects.
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h|d)")


def parse_duration(text: str) -> timedelta:
    """Return the duration ``text`` denotes; raises DurationError when it is not one.

    Follows Go's ``time.ParseDuration``: an optional sign, then one or more number+unit parts
    (``"0"`` alone is allowed). ``d`` (24h) is our extension.
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return timedelta(0)
    if not s:
        raise DurationError(text)
    seconds = 0.0
    pos = 0
    while pos < len(s):
        match = _PART.match(s, pos)
        if match is None:
            raise DurationError(text)
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    try:
        return timedelta(seconds=sign * seconds)
    except OverflowError:
        raise DurationError(text) from None


def format_duration(delta: timedelta) -> str:
    """Render ``delta`` the short way Go prints durations (``1h30m0s`` → ``1h30m``)."""
    total = delta.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    if total < 1:
        return f"{sign}{total * 1000:g}ms" if total else "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{int(hours)}h")
    if minutes:
        parts.append(f"{int(minutes)}m")
    if seconds:
        parts.append(f"{seconds:g}s")
    return sign + "".join(parts)
