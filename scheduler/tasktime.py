"""Task times: finding them in paths and info strings, parsing ``--at``, and their text forms.

A task time is the moment a task's data belongs to (not when it runs). It is always an aware
datetime in UTC. Storage writes it, and every other timestamp, with ``iso`` in one fixed-width
form, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, so that text order is time order in plain SQL.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlsplit


class _Pattern(NamedTuple):
    """One recognisable time shape; ``scope`` says which part of the text it is looked for in."""

    regex: re.Pattern[str]
    scope: Callable[[str], str]


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _whole(text: str) -> str:
    return text


def _pattern(regex: str, scope: Callable[[str], str] = _whole) -> _Pattern:
    # Wrapped in a lookahead so finditer yields a candidate at every start position: an invalid
    # match ("0000/20" inside "130000/2023/05") must not swallow the start of a valid one.
    return _Pattern(re.compile(f"(?={regex})", re.ASCII), scope)


_Y, _M, _D, _H = r"(?P<y>\d{4})", r"(?P<m>\d{2})", r"(?P<d>\d{2})", r"(?P<H>\d{2})"
_MIN_SEC = r"(?P<M>\d{2})(?P<S>\d{2})"

# Query-style keys, looked for anywhere in an info string, in flowlord's order: the keys
# `day`/`date`, then `hour`/`hour_utc`, then `time`/`timestamp` (so `?day=` beats `?hour=`), and
# for each the value read as flowlord does: a full timestamp first, then an hour, then a day
# (`?date=2020-03-05T15` is 15:00). Unanchored like flowlord's, which also lets Hive-style
# partitions (`/dt/day=2024-01-02/`) count.
_ZONE = r"(?P<z>[Zz]|[+-]\d{2}:\d{2})?"
_VALUE_SHAPES = (
    rf"{_Y}-{_M}-{_D}T{_H}:(?P<M>\d{{2}}):(?P<S>\d{{2}})(?:\.\d+)?{_ZONE}",
    rf"{_Y}-{_M}-{_D}T{_H}",
    rf"{_Y}-{_M}-{_D}",
)
_QUERY_KEYS = ("(?:day|date)", "hour(?:_utc)?", "time(?:stamp)?")
_QUERY_PATTERNS = tuple(
    _pattern(rf"{keys}[=:]{shape}") for keys in _QUERY_KEYS for shape in _VALUE_SHAPES
)

# Path shapes in flowlord's PathTime order. Two are ours, placed so that whenever flowlord finds
# a time we find the same one, except that `2024-01-02T13` also keeps its hour:
# the dash day-hour form before the dash day, and a timestamp anywhere in the path as a last resort.
_PATH_PATTERNS = (
    _pattern(rf"{_Y}{_M}{_D}T{_H}{_MIN_SEC}", _basename),
    _pattern(rf"{_Y}/{_M}/{_D}/{_H}"),
    _pattern(rf"{_Y}/{_M}/{_D}"),
    _pattern(rf"{_Y}-{_M}-{_D}T{_H}"),
    _pattern(rf"{_Y}-{_M}-{_D}"),
    _pattern(rf"{_Y}/{_M}"),
    _pattern(rf"{_Y}{_M}{_D}T{_H}{_MIN_SEC}"),
)

_AT_FORM = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:[Zz]|[+-]\d{2}:\d{2})?)?",
    re.ASCII,
)


def time_from_text(text: str) -> datetime | None:
    """Return the task time named in a file path or info string, or None when it names none.

    Order (flowlord's InfoTime, then PathTime): the value of ``day=``/``date=``, then of
    ``hour=``/``hour_utc=``, then of ``time=``/``timestamp=``, each read as a full timestamp
    (``YYYY-MM-DDTHH:MM:SS`` with ``Z`` or an offset, or none for UTC), else ``YYYY-MM-DDTHH``,
    else ``YYYY-MM-DD``; then, in the path part only (the query
    and fragment of a URL are dropped): a ``YYYYMMDDTHHMMSS`` in the file name; an hour slug
    ``YYYY/MM/DD/HH``; a day slug ``YYYY/MM/DD``; ``YYYY-MM-DDTHH``; ``YYYY-MM-DD``; a month
    slug ``YYYY/MM``; a ``YYYYMMDDTHHMMSS`` in a folder name. A shape whose every match is not a
    real date (``2024/13/45``) is passed over for the next one.
    """
    found = _first_time(text, _QUERY_PATTERNS)
    if found is None:
        found = _first_time(_path_part(text), _PATH_PATTERNS)
    return found


def _path_part(text: str) -> str:
    try:
        return urlsplit(text).path
    except ValueError:  # e.g. an unbalanced "[" in what looks like a URL host
        return text


def _first_time(text: str, patterns: Iterable[_Pattern]) -> datetime | None:
    for pattern in patterns:
        for match in pattern.regex.finditer(pattern.scope(text)):
            found = _time_from_match(match)
            if found is not None:
                return found
    return None


def _time_from_match(match: re.Match[str]) -> datetime | None:
    """Build the UTC time the match's named groups spell; None when it is no real date."""
    parts = match.groupdict()

    def field(name: str, default: int) -> int:
        value = parts.get(name)
        return default if value is None else int(value)

    try:
        moment = datetime(
            field("y", 1), field("m", 1), field("d", 1),
            field("H", 0), field("M", 0), field("S", 0), tzinfo=UTC,
        )  # fmt: skip
        zone = parts.get("z")
        if zone and zone not in "Zz":
            sign = -1 if zone[0] == "-" else 1
            offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            moment -= sign * offset  # the text is local time at that offset
        return moment
    except (ValueError, OverflowError):
        return None


def parse_at(text: str) -> datetime:
    """Parse a command-line task time: ``2024-01-02``, ``2024-01-02T13`` or RFC 3339.

    RFC 3339 text may carry ``Z`` or an offset (``2024-01-02T13:04:05+02:00``); minutes and
    seconds may be left off (``2024-01-02T13:04``). Text without a zone is taken as UTC. Returns
    an aware UTC datetime; raises ValueError naming the accepted forms otherwise.
    """
    stripped = text.strip()
    problem = "expected YYYY-MM-DD, YYYY-MM-DDTHH or RFC 3339 such as 2024-01-02T13:04:05Z"
    if not _AT_FORM.fullmatch(stripped):
        raise ValueError(f"invalid time {text!r}: {problem}")
    try:
        parsed = datetime.fromisoformat(stripped.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"invalid time {text!r}: {exc}") from None
    return _as_utc(parsed)


def task_time_for_fire(scheduled: datetime, offset: timedelta) -> datetime:
    """Return the task time of a cron fire: the scheduled time plus ``offset``, in UTC.

    The offset is elapsed time, added after converting to UTC: in a zone with daylight saving,
    Python's aware arithmetic would otherwise add it to the wall clock. Raises ValueError for a
    naive ``scheduled``.
    """
    return _require_aware(scheduled).astimezone(UTC) + offset


def cron_stamp(task_time: datetime) -> str:
    """Return flowlord's ``cron`` meta value for a task time: ``YYYY-MM-DDTHH`` in UTC."""
    # "YYYY-MM-DDTHH+00:00" cut to its hour: iso()[:13] without formatting the rest
    return _require_aware(task_time).astimezone(UTC).isoformat(timespec="hours")[:13]


# iso and from_iso are cached: a tick formats and parses the same few instants (its own time,
# a fire's task time, the stamps of the rows it stored) again and again; a hit is a fifth of
# the work.
@functools.lru_cache(maxsize=4096)
def iso(moment: datetime) -> str:
    """Return ``moment`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (27 characters, always).

    The fixed width (microseconds always written, year zero-padded) is what makes text order
    equal time order in the database. Raises ValueError for a naive datetime.
    """
    if moment.tzinfo is not UTC:  # UTC, the common case on the tick's hot path, is as is
        moment = _require_aware(moment).astimezone(UTC)
    # an aware UTC datetime writes "+00:00" last: swapped for "Z", with no naive copy made
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


@functools.lru_cache(maxsize=4096)
def from_iso(text: str) -> datetime:
    """Parse ISO 8601 text (``iso``'s output, or any offset) into an aware UTC datetime.

    Text without a zone is taken as UTC, since that is how SQLite's own ``CURRENT_TIMESTAMP``
    writes. Raises ValueError when the text is not ISO 8601.
    """
    return _as_utc(datetime.fromisoformat(text.strip()))


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware: {moment.isoformat()}")
    return moment
