"""Render a phase template into a task's info string, compatible with flowlord's tokens.

Tokens (a ``{...}`` that is none of these is left as it is):

=====================  =====================================================================
``{yyyy}`` ``{yy}``    year (4 digits, zero-padded) and its last two digits
``{mm}`` ``{dd}``      month, day of month (2 digits)
``{hh}`` ``{min}``     hour, minute (2 digits)
``{TS}``               ``YYYYMMDDTHHMMSS`` (Go layout ``20060102T150405``)
``{SLUG}``             alias of ``{HOUR_SLUG}``: ``yyyy/mm/dd/hh``
``{DAY_SLUG}``         ``yyyy/mm/dd``
``{MONTH_SLUG}``       ``yyyy/mm``
``{host}``             the host name
``{pod}``              the last two ``-``-separated parts of the host name (all of it if it
                       has no ``-``), the unique part of a Kubernetes pod name
``{uuid}``             8 lowercase hex characters, one value per render call
``{meta:key}``         the task's meta value for ``key`` (ASCII word characters); missing = ""
=====================  =====================================================================

Letter case follows flowlord: each letter of ``yyyy yy mm dd hh`` may be either case
(``{YYYY}``, ``{yyyy}``, ``{Yyyy}``), ``host``, ``pod`` and ``uuid`` are case-insensitive, and
``{min}``, ``{TS}`` and the slugs are matched exactly as written above.

Where we deliberately differ from flowlord (each makes a template render the same or safer):

- One pass over the template: a value that is substituted (a meta value, a host name) is never
  scanned again, so a meta value holding ``{yyyy}`` stays literal. flowlord expands meta first
  and then time tokens, so there such text would be rewritten.
- A missing (zero) task time leaves only the time tokens untouched; ``{host}``, ``{pod}``,
  ``{uuid}`` and ``{meta:key}`` still render. flowlord returns such a template unchanged.
- Every ``{uuid}`` in one template gets the same id (so ``out-{uuid}.json`` and ``{uuid}.log``
  name the same run); flowlord replaces only the first lowercase ``{uuid}``.
"""

from __future__ import annotations

import functools
import re
import shlex
import socket
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

# Named alternatives keep the letter-case rules in one place: `ci` tokens compare lowercased,
# `cs` tokens exactly. re.ASCII because flowlord's `\w` in `{meta:\w+}` is ASCII only.
_TOKEN = re.compile(
    r"\{(?:"
    r"(?P<ci>[Yy]{4}|[Yy]{2}|[Mm]{2}|[Dd]{2}|[Hh]{2}|(?i:host|pod|uuid))"
    r"|(?P<cs>min|TS|SLUG|HOUR_SLUG|DAY_SLUG|MONTH_SLUG)"
    r"|meta:(?P<meta>\w+)"
    r")\}",
    re.ASCII,
)

# What looks meant as a token but is none: braces around text that starts like a name, up to
# the first "}" (so a slip like "{yyyy-{x}" is reported whole), unless it is a token of _TOKEN.
# "${HOME}" is the shell's, and '{"a": 1}' is JSON, not a token. One pass, in C: most templates
# hold no unknown token, and validation runs this for every phase.
_KNOWN = (
    r"[Yy]{4}|[Yy]{2}|[Mm]{2}|[Dd]{2}|[Hh]{2}|(?i:host|pod|uuid)"
    r"|min|TS|SLUG|HOUR_SLUG|DAY_SLUG|MONTH_SLUG|meta:(?a:\w+)"
)
_UNKNOWN_TOKEN = re.compile(rf"(?<!\$)\{{(?!(?:{_KNOWN})\}})[A-Za-z_][^}}\s]*\}}")

# Go's zero time.Time (year 1, January 1, 00:00 UTC) is how flowlord spells "no task time".
_GO_ZERO = datetime(1, 1, 1)


def render(
    template: str,
    task_time: datetime | None,
    meta: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
    uuid: Callable[[], str] | None = None,
) -> str:
    """Return ``template`` with its tokens replaced (see the module docstring).

    ``task_time`` must be timezone-aware; it is rendered in UTC. ``None`` or Go's zero time
    leaves the time tokens as they are. Everything from the first ``#`` on (unless the ``#`` is
    the first character) is returned verbatim, as flowlord does. ``host`` defaults to
    ``socket.gethostname()`` and ``uuid`` to 8 hex characters of a random UUID; each is only
    consulted when its token occurs. Raises ValueError for a naive ``task_time``.
    """
    parsed = _parse(template)
    moment = _utc_time(task_time)
    if not parsed.tokens:
        return template
    return _joined(parsed, _fill(parsed, moment, meta, host, uuid))


def render_args(
    template: str,
    task_time: datetime | None,
    meta: Mapping[str, str] | None = None,
    *,
    host: str | None = None,
    uuid: Callable[[], str] | None = None,
) -> list[str]:
    """The argument list ``template`` gives: split first (shlex, POSIX rules), then each token
    filled in inside its own argument, so a value (a meta value, a path) is always exactly
    one argument or part of one, whatever it holds: spaces, quotes, newlines.

    Tokens render as in ``render``. Raises ValueError when the template itself does not split
    (an unbalanced quote) or for a naive ``task_time``.
    """
    parsed = _parse(template)
    values = _fill(parsed, _utc_time(task_time), meta, host, uuid)
    return _filled_args(_shape(template), values)


def args_of(
    template: str, info: str, task_time: datetime | None, meta: Mapping[str, str] | None
) -> list[str]:
    """The argument list of a task queued as ``info`` (``render`` of ``template`` with this
    task time and meta): ``render_args`` with the same values, ``{uuid}`` included, so the
    command runs exactly what ``info`` says. When ``template`` no longer renders to ``info``
    (the file changed since the task was queued), ``info`` itself split with shlex, as queued.

    Raises ValueError when neither splits (an unbalanced quote).
    """
    parsed = _parse(template)
    values = _fill(parsed, _utc_time(task_time), meta, None, _no_uuid)
    ident = _uuid_in(parsed, values, info)
    if ident is None:
        return shlex.split(info)
    if ident:
        values = [
            ident if token.kind is _Kind.UUID else value
            for token, value in zip(parsed.tokens, values, strict=True)
        ]
    return _filled_args(_shape(template), values)


class _Kind(Enum):
    """What fills a token."""

    TIME = "time"
    META = "meta"
    HOST = "host"
    POD = "pod"
    UUID = "uuid"


@dataclass(frozen=True)
class _Token:
    """One token as found in a template: ``name`` is a time token's normalised name or a meta
    key; ``text`` is the token as written (what a time token stays without a task time)."""

    kind: _Kind
    name: str
    text: str


@dataclass(frozen=True)
class _Parsed:
    """A template cut at its tokens: ``literals`` holds the text before, between and after
    them (one more than ``tokens``), ``tail`` the comment part, which is never rendered."""

    literals: tuple[str, ...]
    tokens: tuple[_Token, ...]
    tail: str
    has_uuid: bool
    timed: bool  # holds a time token


# Each distinct template is parsed (and split) once, not once per row. Keyed by the template
# text itself, so an edited template is a new entry and never meets a stale parse; a miss
# costs what one render did before there was a cache.
_CACHED_TEMPLATES = 16384


@functools.lru_cache(maxsize=_CACHED_TEMPLATES)
def _parse(template: str) -> _Parsed:
    """``template`` cut at its tokens, in one pass of ``_TOKEN`` over the part before ``#``."""
    head, tail = _split_comment(template)
    literals, tokens, at = [], [], 0
    for match in _TOKEN.finditer(head):
        literals.append(head[at : match.start()])
        tokens.append(_token_of(match))
        at = match.end()
    literals.append(head[at:])
    kinds = {token.kind for token in tokens}
    return _Parsed(tuple(literals), tuple(tokens), tail, _Kind.UUID in kinds, _Kind.TIME in kinds)


def _token_of(match: re.Match[str]) -> _Token:
    text = match.group(0)
    if (key := match.group("meta")) is not None:
        return _Token(_Kind.META, key, text)
    name = (match.group("ci") or "").lower() or match.group("cs")
    kind = {"host": _Kind.HOST, "pod": _Kind.POD, "uuid": _Kind.UUID}.get(name, _Kind.TIME)
    return _Token(kind, name, text)


# An argument of a split template: its text up to the first token, then (token index, text up
# to the next token) for each token inside it.
_Arg = tuple[str, tuple[tuple[int, str], ...]]


@functools.lru_cache(maxsize=_CACHED_TEMPLATES)
def _shape(template: str) -> tuple[_Arg, ...]:
    """The arguments ``template`` splits into, with a slot where each token goes: the tokens
    are replaced by numbered markers, the text is split, then the markers are found again.
    Raises ValueError (not cached) when the template does not split."""
    mark = _marker(template)
    parsed = _parse(template)
    marked = [parsed.literals[0]]
    for index, literal in enumerate(parsed.literals[1:]):
        marked += [f"{mark}{index}{mark}", literal]
    slot = re.compile(f"{mark}(\\d+){mark}")
    args = []
    for arg in shlex.split("".join(marked) + parsed.tail):
        lead, *rest = slot.split(arg)
        pairs = tuple((int(rest[i]), rest[i + 1]) for i in range(0, len(rest), 2))
        args.append((lead, pairs))
    return tuple(args)


def _filled_args(shape: tuple[_Arg, ...], values: list[str]) -> list[str]:
    return [
        lead + "".join(values[index] + text for index, text in pairs) if pairs else lead
        for lead, pairs in shape
    ]


def _joined(parsed: _Parsed, values: list[str]) -> str:
    literals = parsed.literals
    parts = [literals[0]]
    for index, value in enumerate(values, 1):
        parts += [value, literals[index]]
    parts.append(parsed.tail)
    return "".join(parts)


def _fill(
    parsed: _Parsed,
    moment: datetime | None,
    meta: Mapping[str, str] | None,
    host: str | None,
    uuid: Callable[[], str] | None,
) -> list[str]:
    """The value of each token of ``parsed``, in order; ``moment`` is the task time in UTC
    (None: time tokens stay as written). Host and uuid are asked for once, when needed."""
    meta = meta or {}
    times = _time_texts(moment) if moment is not None and parsed.timed else {}
    ident: str | None = None
    values = []
    for token in parsed.tokens:
        kind = token.kind
        if kind is _Kind.META:
            values.append(meta.get(token.name, ""))
        elif kind is _Kind.TIME:
            values.append(times.get(token.name, token.text))
        elif kind is _Kind.UUID:
            if ident is None:
                ident = (uuid or _random_id)()
            values.append(ident)
        else:
            host = host if host is not None else socket.gethostname()
            values.append(host if kind is _Kind.HOST else pod_name(host))
    return values


def _uuid_in(parsed: _Parsed, values: list[str], info: str) -> str | None:
    """The ``{uuid}`` value ``info`` was rendered with ("" when the template has none); None
    when ``info`` is not a rendering of the template with these values. Every ``{uuid}`` of
    one rendering holds the same 8 lowercase hex characters."""
    if not parsed.has_uuid:
        return "" if _joined(parsed, values) == info else None
    ident: str | None = None
    at = len(parsed.literals[0])
    if not info.startswith(parsed.literals[0]):
        return None
    for token, value, literal in zip(parsed.tokens, values, parsed.literals[1:], strict=True):
        if token.kind is _Kind.UUID:
            value = info[at : at + 8]
            if ident is None and _HEX_ID.fullmatch(value):
                ident = value
            if value != ident:
                return None
        if not info.startswith(value + literal, at):
            return None
        at += len(value) + len(literal)
    return ident if info[at:] == parsed.tail else None


_HEX_ID = re.compile("[0-9a-f]{8}")


def _no_uuid() -> str:
    return ""


def _marker(template: str) -> str:
    """A character the template does not hold (from Unicode's private use area): it brackets
    the slot of each value while the template is split, and shlex treats it as a letter."""
    return next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in template)


def unknown_tokens(template: str) -> list[str]:
    """The ``{...}`` in ``template`` that look meant as tokens but are none (``{nope}``), in
    order, each once. The part after a ``#`` is not rendered, so it is not looked at."""
    found = _UNKNOWN_TOKEN.findall(_split_comment(template)[0]) if "{" in template else []
    return list(dict.fromkeys(found)) if found else []


def pod_name(host: str) -> str:
    """Return the last two ``-``-separated parts of ``host`` (``web-7f9c-x2kq`` → ``7f9c-x2kq``)."""
    return "-".join(host.split("-")[-2:])


def is_zero_time(task_time: datetime | None) -> bool:
    """True when ``task_time`` means "no task time": ``None`` or Go's zero time."""
    # the year first: it settles nearly every call without making a naive copy
    return task_time is None or (task_time.year == 1 and task_time.replace(tzinfo=None) == _GO_ZERO)


def _split_comment(template: str) -> tuple[str, str]:
    """Split at the first ``#`` that is not the first character; the tail is never rendered."""
    index = template.find("#")
    if index > 0:
        return template[:index], template[index:]
    return template, ""


def _utc_time(task_time: datetime | None) -> datetime | None:
    """``task_time`` in UTC, or None for no task time; raises ValueError when it is naive."""
    if task_time is None or is_zero_time(task_time):
        return None
    if task_time.tzinfo is None:
        raise ValueError(f"task time must be timezone-aware: {task_time.isoformat()}")
    return task_time.astimezone(UTC)


# Rows released together share their task time (a fan-out's children, a cron burst), so the
# texts of a time are built once for all of them.
@functools.lru_cache(maxsize=256)
def _time_texts(t: datetime) -> dict[str, str]:
    """The text of each time token (by its normalised name) for ``t``, a task time in UTC.
    Callers must not change the dict: it is shared."""
    yyyy, mm, dd, hh = f"{t.year:04d}", f"{t.month:02d}", f"{t.day:02d}", f"{t.hour:02d}"
    hour_slug = f"{yyyy}/{mm}/{dd}/{hh}"
    return {
        "yyyy": yyyy,
        "yy": yyyy[-2:],
        "mm": mm,
        "dd": dd,
        "hh": hh,
        "min": f"{t.minute:02d}",
        "TS": f"{yyyy}{mm}{dd}T{hh}{t.minute:02d}{t.second:02d}",
        "SLUG": hour_slug,
        "HOUR_SLUG": hour_slug,
        "DAY_SLUG": f"{yyyy}/{mm}/{dd}",
        "MONTH_SLUG": f"{yyyy}/{mm}",
    }


def _random_id() -> str:
    return uuid_module.uuid4().hex[:8]
