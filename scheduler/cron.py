"""Flowlord's cron dialect: parsing, and the next fire time as a pure function of time.

Dialect
    Five fields ``min hour dom mon dow`` or six with seconds FIRST (``sec min hour dom mon dow``).
    Values, ranges ``a-b``, lists ``a,b``, steps ``*/n`` and ``a/n`` (``a`` to the field's end);
    month names ``JAN-DEC`` and day names ``SUN-SAT`` in any case; ``?`` means ``*``; day of
    week 7 is Sunday. When day of month and day of week are both restricted, either may match.
    Descriptors ``@yearly @annually @monthly @weekly @daily @midnight @hourly`` (any case), and
    ``@every <duration>`` (Go syntax plus ``d``, must be positive).

``@every d`` fires at every whole multiple of ``d`` counted from the Unix epoch in UTC, so its
fire times depend on nothing but the clock (not on when the scheduler started) and ignore the
time zone: ``@every 90m`` fires at 00:00, 01:30, 03:00 … UTC.

Time zones and daylight saving time
    Cron fields are wall-clock times in the schedule's zone. A schedule is *daily-style* when its
    hour field is a fixed set (``30 2 * * *``, ``0 8-18 * * *``) and *sub-daily* when the hour
    field is a wildcard (``*`` or ``*/n``), as in classic cron.

    * Spring forward (a wall time that does not exist): a daily-style schedule fires once, at the
      first valid instant after the gap (Berlin 2024-03-31 ``30 2 * * *`` fires at 03:00 CEST);
      a sub-daily schedule skips the missing wall times, because every real hour still gets its
      fire (``30 * * * *`` fires 01:30 CET then 03:30 CEST, one hour apart).
    * Fall back (a wall time that happens twice): a daily-style schedule fires once, at the first
      occurrence (02:30 CEST); a sub-daily schedule fires in every real hour (02:30 CEST and
      02:30 CET).

    The calendar math is done on naive wall times only: which wall times match is croniter's
    reading of the fields (its expansion of each field, and its rule for day of month and day
    of week), walked here day by day, which is several times faster than asking croniter for
    each next time; croniter itself answers past a year (29 February). Mapping wall times to
    instants (gaps and the ``fold``) is done here, because croniter alone fires daily jobs
    twice on the autumn night.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo

from croniter import croniter

from scheduler.durations import parse_duration
from scheduler.errors import CronError, CronNeverFires, DurationError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# @every bounds: flowlord's cron library rounds a shorter period up to a second, and a period
# past a century would carry fire times off the calendar (year 9999).
SHORTEST_EVERY = timedelta(seconds=1)
LONGEST_EVERY = timedelta(days=36525)
# No field value or step has more digits than this; a longer one is out of range, and reading
# it could exceed Python's limit on converting digit strings.
_MAX_DIGITS = 4

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("second", 0, 59, {}),
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    _Field("day of week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)
_PART = re.compile(r"^(?P<range>\*|[^-/]+|[^-/]+-[^-/]+)(?:/(?P<step>[^/]*))?$")
_HOUR = 2  # index of the hour field in the six-field form


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression; immutable, hashable, shared between phases.

    ``fields`` is the normalised six-field expression (seconds first, numbers only) handed to
    croniter; it is empty for ``@every``, whose period is ``every``. ``daily_style`` is True when
    the hour field is a fixed set (see the module docstring for what that changes at DST).
    """

    expr: str
    fields: str = ""
    every: timedelta | None = None
    daily_style: bool = False

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        """Return the first fire time strictly after ``after``, as an aware UTC datetime.

        ``after`` must be timezone-aware (ValueError otherwise); ``tz`` is the zone whose wall
        clock the cron fields describe (ignored by ``@every``).
        """
        if after.utcoffset() is None:
            raise ValueError(f"naive datetime: {after!r}")
        if self.every is not None:
            steps = (after - _EPOCH) // self.every
            return _EPOCH + (steps + 1) * self.every
        return _memo_next(self, tz, after)


@lru_cache(maxsize=4096)
def parse_cron(expr: str) -> CronSchedule:
    """Parse ``expr`` in flowlord's dialect; raises CronError(expr, reason) when invalid.

    Results are cached by expression, so parsing the same rule for many phases is cheap.
    """
    text = expr.strip()
    if text.startswith("@"):
        return _parse_descriptor(expr, text)
    return _parse_fields(expr, text.split())


def _parse_descriptor(expr: str, text: str) -> CronSchedule:
    word, _, rest = text.partition(" ")
    word = word.lower()
    if word == "@every":
        return CronSchedule(expr, every=_every_period(expr, rest.strip()))
    if word not in _DESCRIPTORS or rest.strip():
        raise CronError(expr, f"unknown descriptor {text}")
    return _parse_fields(expr, _DESCRIPTORS[word].split())


def _every_period(expr: str, text: str) -> timedelta:
    if not text:
        raise CronError(expr, "@every needs a duration")
    try:
        period = parse_duration(text)
    except DurationError:
        raise CronError(expr, f"bad duration {text}") from None
    if period <= timedelta(0):
        raise CronError(expr, f"duration must be positive, got {text}")
    if not SHORTEST_EVERY <= period <= LONGEST_EVERY:
        raise CronError(expr, f"duration must be from 1s to 36525d, got {text}")
    return period


def _parse_fields(expr: str, parts: list[str]) -> CronSchedule:
    if len(parts) not in (5, 6):
        raise CronError(expr, f"expected 5 or 6 fields, got {len(parts)}")
    if len(parts) == 5:
        parts = ["0", *parts]
    fields = [_normalise(expr, part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
    schedule = CronSchedule(expr, " ".join(fields), daily_style=not fields[_HOUR].startswith("*"))
    _check_fires(schedule)
    return schedule


def _normalise(expr: str, text: str, spec: _Field) -> str:
    """Check one field and return it with names resolved, ``?`` as ``*`` and ``*/1`` as ``*``."""
    items = [_normalise_item(expr, item, spec) for item in text.split(",")]
    return ",".join(items)


def _normalise_item(expr: str, item: str, spec: _Field) -> str:
    match = _PART.match(item.replace("?", "*"))
    if match is None:
        raise CronError(expr, f"{spec.name}: bad value {item}")
    span = match.group("range")
    if span != "*":
        bounds = [_value(expr, v, spec) for v in span.split("-")]
        if bounds[0] > bounds[-1]:
            raise CronError(expr, f"{spec.name}: range {span} is reversed")
        span = "-".join(str(b) for b in bounds)
    step = match.group("step")
    if step is None:
        return span
    digits = step.isascii() and step.isdigit() and _short(step)
    if not digits or _int(step) < 1:
        raise CronError(expr, f"{spec.name}: bad step {step}")
    return span if span == "*" and _int(step) == 1 else f"{span}/{_int(step)}"


def _value(expr: str, text: str, spec: _Field) -> int:
    digits = text.isascii() and text.isdigit()
    number = _int(text) if digits and _short(text) else spec.names.get(text.lower())
    if number is None and not digits:
        raise CronError(expr, f"{spec.name}: bad value {text}")
    if number is None or not spec.low <= number <= spec.high:
        raise CronError(expr, f"{spec.name}: {text} out of range {spec.low}-{spec.high}")
    return number


def _short(digits: str) -> bool:
    """True when a digit string is short enough to be a field value (leading zeros aside)."""
    return len(digits.lstrip("0")) <= _MAX_DIGITS


def _int(digits: str) -> int:
    # without its leading zeros: Python refuses to convert strings of over 4300 digits
    return int(digits.lstrip("0") or "0")


def _check_fires(schedule: CronSchedule) -> None:
    """Reject expressions that can never match, such as 30 February, with CronNeverFires."""
    try:
        croniter(schedule.fields, datetime(2000, 1, 1), second_at_beginning=True).get_next()
    except (ValueError, KeyError):  # croniter's errors derive from ValueError
        raise CronNeverFires(schedule.expr) from None


# --- next fire time ---------------------------------------------------------------------------

# next_after is a step function of `after`: for every a in [after, nxt) the answer is nxt. Keeping
# the last interval per (schedule, zone) makes the engine's "is anything due?" check on every
# tick a dictionary lookup. Races between threads only cost a recomputation. Keyed by what the
# wall-clock search reads: the strings' hashes are kept by Python, a CronSchedule's is recomputed.
_MEMO: dict[tuple[str, bool, ZoneInfo], list[tuple[datetime, datetime]]] = {}
_MEMO_LIMIT = 16384
_MEMO_INTERVALS = 4  # per schedule: many phases sharing a cron ask about a few neighbouring times
_LOCAL = threading.local()


def _memo_next(schedule: CronSchedule, tz: ZoneInfo, after: datetime) -> datetime:
    key = (schedule.fields, schedule.daily_style, tz)
    intervals = _MEMO.get(key)
    if intervals is not None:
        for low, nxt in intervals:
            if low <= after < nxt:
                return nxt
    nxt = _next_wall_fire(schedule, tz, after)
    if len(_MEMO) >= _MEMO_LIMIT:
        _MEMO.clear()
    _MEMO[key] = [(after, nxt), *(intervals or [])][:_MEMO_INTERVALS]
    return nxt


def _next_wall_fire(schedule: CronSchedule, tz: ZoneInfo, after: datetime) -> datetime:
    """Smallest instant > ``after`` among the instants of all matching wall times.

    Instants are increasing in wall time except inside a repeated hour, where the second pass
    comes after the first pass of later wall times. So the search starts one fold earlier when
    ``after`` lies in a first pass, and it stops only at a wall time that is not repeated.
    """
    local = after.astimezone(tz)
    start = local.replace(tzinfo=None)
    if _is_first_pass(local):
        start -= _offset(local) - _offset(local.replace(fold=1))
    best: datetime | None = None
    for wall in _walls_after(schedule.fields, start):
        instants, repeated = _instants(wall, tz, schedule.daily_style)
        later = [t for t in instants if t > after]
        if later and (best is None or later[0] < best):
            best = later[0]
        if later and not repeated:
            return cast(datetime, best)
    raise AssertionError("unreachable: matching wall times never run out")  # pragma: no cover


def _walls_after(fields: str, start: datetime) -> Iterator[datetime]:
    """Matching naive wall times strictly after ``start``, ascending: the same times croniter
    gives, found on the field values croniter expands (``_Calendar``), and by croniter itself
    past a wait too long for a walk day by day."""
    calendar = _calendar(fields)
    moment = start
    while (found := calendar.next_after(moment)) is not None:
        yield found
        moment = found
    yield from _croniter_walls_after(fields, moment)


def _croniter_walls_after(fields: str, start: datetime) -> Iterator[datetime]:
    """Matching naive wall times strictly after ``start``, ascending (croniter, per thread)."""
    cache: dict[str, croniter] = _LOCAL.__dict__.setdefault("iters", {})
    it = cache.get(fields)
    if it is None:
        it = cache[fields] = croniter(fields, start, ret_type=datetime, second_at_beginning=True)
    else:
        it.set_current(start, force=True)
    while True:
        yield cast(datetime, it.get_next())


# A walk day by day finds the next fire of every schedule within a year, but for 29 February;
# past a year croniter takes over.
_MAX_DAYS_WALKED = 366


@dataclass(frozen=True)
class _Calendar:
    """The values each field of a schedule allows, as croniter expands them. ``days``,
    ``months`` and ``weekdays`` (0 is Sunday) are None when croniter reads the field as ``*``;
    when both ``days`` and ``weekdays`` are restricted, a day matching either matches."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first matching wall time strictly after ``moment`` (to the second, as croniter
        counts), or None when it is over ``_MAX_DAYS_WALKED`` days away."""
        start = moment.replace(microsecond=0) + _SECOND
        day = start.date()
        at = self._time_from(start.time()) if self._allows(day) else None
        for _ in range(_MAX_DAYS_WALKED):
            if at is not None:
                return datetime.combine(day, at)
            day += _DAY
            at = self._first_time() if self._allows(day) else None
        return None

    def _first_time(self) -> time:
        """The first allowed time of a day."""
        return time(self.hours[0], self.minutes[0], self.seconds[0])

    def _allows(self, day: date) -> bool:
        if self.months is not None and day.month not in self.months:
            return False
        in_days = self.days is None or day.day in self.days
        in_weekdays = self.weekdays is None or day.isoweekday() % 7 in self.weekdays
        if self.days is not None and self.weekdays is not None:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def _time_from(self, start: time) -> time | None:
        """The first allowed time of day at or after ``start``; None when none is left."""
        for hour in self.hours[bisect_left(self.hours, start.hour) :]:
            if hour > start.hour:
                return time(hour, self.minutes[0], self.seconds[0])
            for minute in self.minutes[bisect_left(self.minutes, start.minute) :]:
                if minute > start.minute:
                    return time(hour, minute, self.seconds[0])
                index = bisect_left(self.seconds, start.second)
                if index < len(self.seconds):
                    return time(hour, minute, self.seconds[index])
        return None


_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)


@lru_cache(maxsize=4096)
def _calendar(fields: str) -> _Calendar:
    """``fields`` (normalised, seconds first) as croniter expands each of them."""
    expanded = croniter(fields, datetime(2000, 1, 1), second_at_beginning=True).expanded
    minute, hour, day, month, weekday, second = expanded  # croniter keeps seconds last

    def values(field: list[Any], low: int, high: int) -> tuple[int, ...]:
        return tuple(range(low, high + 1)) if field[0] == "*" else tuple(sorted(field))

    def subset(field: list[Any]) -> frozenset[int] | None:
        return None if field[0] == "*" else frozenset(field)

    return _Calendar(
        values(second, 0, 59),
        values(minute, 0, 59),
        values(hour, 0, 23),
        subset(day),
        subset(month),
        subset(weekday),
    )


def _instants(wall: datetime, tz: ZoneInfo, daily_style: bool) -> tuple[list[datetime], bool]:
    """The UTC instants a matching wall time fires at (ascending), and whether it is repeated."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if _offset(first) == _offset(second):
        return [first.astimezone(UTC)], False
    a, b = sorted((first.astimezone(UTC), second.astimezone(UTC)))
    if _exists(first):  # repeated wall time: fold=0 is the first pass
        return ([first.astimezone(UTC)] if daily_style else [a, b]), True
    return ([_transition(a, b, tz)] if daily_style else []), False


def _exists(moment: datetime) -> bool:
    return moment.astimezone(UTC).astimezone(moment.tzinfo).replace(tzinfo=None) == (
        moment.replace(tzinfo=None)
    )


def _is_first_pass(local: datetime) -> bool:
    return local.fold == 0 and _offset(local) != _offset(local.replace(fold=1))


def _offset(moment: datetime) -> timedelta:
    return cast(timedelta, moment.utcoffset())


def _transition(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The instant in (before, after] where the zone's offset changes, to the second."""
    old = _offset(before.astimezone(tz))
    lo, hi = int(before.timestamp()), int(after.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(datetime.fromtimestamp(mid, tz)) == old:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)
