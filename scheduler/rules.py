"""A phase's rule: a URL query string (``cron=0 5 * * *&offset=-24h``) parsed into a frozen Rule.

Parsing is strict, as flowlord's: a ``;`` or a bad ``%`` escape makes the whole rule invalid.
Keys flowlord knows are read the way it reads them; ``manual``, ``tz``, ``timeout``,
``retry_backoff``, ``retry_max_delay``, ``concurrency`` and ``catchup`` are ours (flowlord ignores
unknown keys, so files stay portable). Any other key is kept out of the Rule and listed in
``Rule.unknown`` so the loader can report it as a warning.

Every value is range-checked here, so that nothing a rule says can later overflow a date, a
step count or a database column: a NUL byte anywhere, a duration past ``LONGEST`` (a century),
a batch of more than ``MAX_BATCH`` tasks per fire, a ``concurrency`` past ``MAX_CONCURRENCY``
are each an ``invalid value`` (or ``invalid duration``) status.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache
from urllib.parse import unquote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler import globs
from scheduler.cron import CronSchedule, parse_cron
from scheduler.durations import parse_duration
from scheduler.errors import CronError, CronNeverFires, DurationError, RuleError
from scheduler.retry import Backoff
from scheduler.timing import Catchup

DEFAULT_RETRY_DELAY = timedelta(seconds=1)
LONGEST = timedelta(days=36525)  # any duration past a century is a typo, and dates overflow
MAX_BATCH = 100_000  # tasks one batch fire may queue (time steps times meta rows)
MAX_CONCURRENCY = 1_000_000
_SHOWN = 100  # characters of a bad value repeated in a status
_MIN_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7),
             "month": timedelta(days=28)}  # fmt: skip
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_META_TOKEN = re.compile(r"\{meta:([^{}]+)\}", re.IGNORECASE)
_Reader = Callable[[list[str]], dict[str, object]]


class BatchBy(StrEnum):
    """The step of a batch rule (``by=``)."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class Rule:
    """Everything a rule says, typed. Built only by ``parse_rule``."""

    text: str = ""
    cron: CronSchedule | None = None  # None also when ``manual`` or when the cron never fires
    cron_text: str = ""  # the cron as written, usable or not
    never_fires: bool = False  # the cron is well formed but matches no time (0 0 30 2 *)
    manual: bool = False
    offset: timedelta = timedelta(0)
    job: str = ""
    retry_delay: timedelta = DEFAULT_RETRY_DELAY
    retry_backoff: Backoff = Backoff.FIXED
    retry_max_delay: timedelta | None = None
    no_alert: bool = False
    require: tuple[str, ...] = ()
    files: str = ""
    batch_for: timedelta | None = None
    batch_by: BatchBy = BatchBy.DAY
    meta: tuple[tuple[str, tuple[str, ...]], ...] = ()
    meta_file: str = ""
    tz: str = ""
    timeout: timedelta | None = None
    concurrency: int | None = None
    catchup: Catchup = Catchup.LATEST
    sla: timedelta | None = None  # deadline after the scheduled time (sla.py)
    unknown: tuple[str, ...] = ()

    @property
    def is_batch(self) -> bool:
        return self.batch_for is not None or bool(self.meta) or bool(self.meta_file)

    @property
    def scheduled(self) -> bool:
        """True when the planner fires this phase on a clock (a cron that can fire)."""
        return self.cron is not None

    def meta_rows(self) -> list[dict[str, str]]:
        """The ``meta=name:a,b|value:1,2`` batch as one dict per index (empty when no meta)."""
        if not self.meta:
            return []
        width = len(self.meta[0][1])
        return [{key: values[i] for key, values in self.meta} for i in range(width)]


def query_pairs(text: str) -> list[tuple[str, str]]:
    """Split a query string the strict way; raises ValueError on ``;`` or a bad ``%`` escape."""
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        if ";" in part:
            raise ValueError("semicolon separator")
        key, _, value = part.partition("=")
        if _BAD_ESCAPE.search(key) or _BAD_ESCAPE.search(value):
            raise ValueError("bad % escape")
        pairs.append((unquote_plus(key), unquote_plus(value)))
    return pairs


@lru_cache(maxsize=8192)
def parse_rule(text: str) -> Rule:
    """Parse a rule string; raises RuleError whose ``status`` is the workflow_phases message.

    Results are cached by text (a Rule is immutable): every refresh and snapshot re-reads the
    stored rules, and many phases share one.
    """
    try:
        pairs = query_pairs(text)
    except ValueError:
        raise RuleError(f"invalid rule format: {text}") from None
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        if "\0" in key or "\0" in value:
            raise _bad_value(key, value, "NUL byte")
        values.setdefault(key, []).append(value)
    unknown = tuple(key for key in values if key not in _READERS)
    fields: dict[str, object] = {"text": text, "unknown": unknown}
    for key, read in _READERS.items():
        if key in values:
            fields.update(read(values[key]))
    if fields.get("manual"):
        fields["cron"] = None  # a manual phase has no schedule, whatever else the rule says
    rule = Rule(**fields)  # type: ignore[arg-type]
    _check_batch(text, values, rule)
    return rule


def shown(value: str) -> str:
    """``value`` as a status repeats it: NUL bytes visible, at most ``_SHOWN`` characters."""
    value = value.replace("\0", "\\0")
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "…"


def _first(values: list[str]) -> str:
    return values[0]


def _duration(key: str, value: str) -> timedelta:
    """A duration of at most ``LONGEST`` either way."""
    try:
        delta = parse_duration(value)
    except DurationError:
        raise RuleError(f"invalid duration: {key}={shown(value)}") from None
    if abs(delta) > LONGEST:
        raise _bad_value(key, value, "want at most 36525d either way")
    return delta


def _positive_duration(key: str, value: str) -> timedelta:
    delta = _duration(key, value)
    if delta <= timedelta(0):
        raise RuleError(f"invalid duration: {key}={shown(value)}")
    return delta


def _delay(key: str, value: str) -> timedelta:
    delta = _duration(key, value)
    if delta < timedelta(0):
        raise _bad_value(key, value, "want 0 or more")
    return delta


def _bad_value(key: str, value: str, reason: str) -> RuleError:
    return RuleError(f"invalid value: {shown(key)}={shown(value)} ({reason})")


def _read_cron(values: list[str]) -> dict[str, object]:
    expr = _first(values)
    try:
        return {"cron": parse_cron(expr), "cron_text": expr}
    except CronNeverFires:
        return {"cron_text": expr, "never_fires": True}
    except CronError as exc:
        raise RuleError(f"invalid cron: {shown(expr)} {exc.reason}") from None


def _read_enum(key: str, field: str, enum: type[StrEnum]) -> _Reader:
    def read(values: list[str]) -> dict[str, object]:
        value = _first(values)
        try:
            return {field: enum(value.lower())}
        except ValueError:
            choices = ", ".join(member.value for member in enum)
            raise _bad_value(key, value, f"want one of {choices}") from None

    return read


def _read_tz(values: list[str]) -> dict[str, object]:
    value = _first(values)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder or too long a name
        raise _bad_value("tz", value, "unknown time zone") from None
    return {"tz": value}


def _read_concurrency(values: list[str]) -> dict[str, object]:
    value = _first(values)
    digits = value.isascii() and value.isdigit() and len(value) <= 7
    if not digits or not 1 <= int(value) <= MAX_CONCURRENCY:
        raise _bad_value("concurrency", value, f"want a whole number from 1 to {MAX_CONCURRENCY}")
    return {"concurrency": int(value)}


def _read_files(values: list[str]) -> dict[str, object]:
    value = _first(values)
    problem = globs.check(value)
    if problem is not None:
        raise _bad_value("files", value, f"bad glob: {problem}")
    return {"files": value}


def _read_require(values: list[str]) -> dict[str, object]:
    keys: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            named = _META_TOKEN.findall(item)
            keys.extend(named if named else [item] if item else [])
    return {"require": tuple(keys)}


def _read_meta(values: list[str]) -> dict[str, object]:
    value = _first(values)
    columns: list[tuple[str, tuple[str, ...]]] = []
    for column in value.split("|"):
        name, sep, items = column.partition(":")
        if not sep or not name:
            raise _bad_value("meta", value, "want name:a,b|other:1,2")
        columns.append((name, tuple(items.split(","))))
    if len({len(items) for _, items in columns}) > 1:
        raise _bad_value("meta", value, "lists differ in length")
    return {"meta": tuple(columns)}


def _check_batch(text: str, values: dict[str, list[str]], rule: Rule) -> None:
    """A batch names one source of rows and queues at most ``MAX_BATCH`` tasks per fire."""
    if "meta" in values and "meta-file" in values:
        raise RuleError(f"invalid value: meta and meta-file together in {shown(text)}")
    steps = 1
    if rule.batch_for is not None:
        steps += abs(rule.batch_for) // _MIN_STEP[rule.batch_by.value]
    rows = len(rule.meta[0][1]) if rule.meta else 1
    if steps * rows > MAX_BATCH:
        key = "for" if steps > 1 else "meta"
        raise _bad_value(key, _first(values[key]), f"more than {MAX_BATCH} tasks per fire")


_READERS: dict[str, _Reader] = {
    "cron": _read_cron,
    "offset": lambda v: {"offset": _duration("offset", _first(v))},
    "job": lambda v: {"job": _first(v)},
    "retry_delay": lambda v: {"retry_delay": _delay("retry_delay", _first(v))},
    "retry_backoff": _read_enum("retry_backoff", "retry_backoff", Backoff),
    "retry_max_delay": lambda v: {
        "retry_max_delay": _positive_duration("retry_max_delay", _first(v))
    },
    "no_alert": lambda v: {"no_alert": True},
    "manual": lambda v: {"manual": True},
    "require": _read_require,
    "files": _read_files,
    "for": lambda v: {"batch_for": _duration("for", _first(v))},
    "by": _read_enum("by", "batch_by", BatchBy),
    "meta": _read_meta,
    "meta-file": lambda v: {"meta_file": _first(v)},
    "tz": _read_tz,
    "timeout": lambda v: {"timeout": _positive_duration("timeout", _first(v))},
    "concurrency": _read_concurrency,
    "catchup": _read_enum("catchup", "catchup", Catchup),
    "sla": lambda v: {"sla": _positive_duration("sla", _first(v))},
}
