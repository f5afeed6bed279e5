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

import re
import shlex
import socket
import uuid as uuid_module
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

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
    return _render(template, task_time, meta, host, uuid, lambda value: value)


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
    values: list[str] = []
    mark = _marker(template)

    def keep(value: str) -> str:
        values.append(value)
        return f"{mark}{len(values) - 1}{mark}"

    marked = _render(template, task_time, meta, host, uuid, keep)
    slot = re.compile(f"{mark}(\\d+){mark}")
    return [slot.sub(lambda m: values[int(m.group(1))], arg) for arg in shlex.split(marked)]


def args_of(
    template: str, info: str, task_time: datetime | None, meta: Mapping[str, str] | None
) -> list[str]:
    """The argument list of a task queued as ``info`` (``render`` of ``template`` with this
    task time and meta): ``render_args`` with the same values, ``{uuid}`` included, so the
    command runs exactly what ``info`` says. When ``template`` no longer renders to ``info``
    (the file changed since the task was queued), ``info`` itself split with shlex, as queued.

    Raises ValueError when neither splits (an unbalanced quote).
    """
    ident = _uuid_in(template, info, task_time, meta)
    if ident is not None and render(template, task_time, meta, uuid=lambda: ident) == info:
        return render_args(template, task_time, meta, uuid=lambda: ident)
    return shlex.split(info)


def _uuid_in(
    template: str, info: str, task_time: datetime | None, meta: Mapping[str, str] | None
) -> str | None:
    """The ``{uuid}`` value ``info`` was rendered with ("" when it has none); None when
    ``info`` is not a rendering of ``template``."""
    mark = _marker(template + info)
    pattern = re.escape(render(template, task_time, meta, uuid=lambda: mark))
    # the first {uuid} captures, later ones must repeat it
    pattern = pattern.replace(re.escape(mark), "(?P<id>[0-9a-f]{8})", 1)
    found = re.fullmatch(pattern.replace(re.escape(mark), "(?P=id)"), info, re.DOTALL)
    if found is None:
        return None
    return found.groupdict().get("id") or ""


def _marker(template: str) -> str:
    """A character the template does not hold (from Unicode's private use area): it brackets
    the slot of each value while the template is split, and shlex treats it as a letter."""
    return next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in template)


def _render(
    template: str,
    task_time: datetime | None,
    meta: Mapping[str, str] | None,
    host: str | None,
    uuid: Callable[[], str] | None,
    wrap: Callable[[str], str],
) -> str:
    """``render``, with every substituted value passed through ``wrap``."""
    head, tail = _split_comment(template)
    values = _time_values(task_time)
    ids = _Lazy(uuid or _random_id)
    hosts = _Lazy((lambda: host) if host is not None else socket.gethostname)
    meta = meta or {}

    def substitute(match: re.Match[str]) -> str:
        if (key := match.group("meta")) is not None:
            return wrap(meta.get(key, ""))
        name = (match.group("ci") or "").lower() or match.group("cs")
        if name == "host":
            return wrap(hosts.get())
        if name == "pod":
            return wrap(pod_name(hosts.get()))
        if name == "uuid":
            return wrap(ids.get())
        return wrap(values.get(name, match.group(0)))

    return _TOKEN.sub(substitute, head) + tail


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
    return task_time is None or task_time.replace(tzinfo=None) == _GO_ZERO


def _split_comment(template: str) -> tuple[str, str]:
    """Split at the first ``#`` that is not the first character; the tail is never rendered."""
    index = template.find("#")
    if index > 0:
        return template[:index], template[index:]
    return template, ""


def _time_values(task_time: datetime | None) -> dict[str, str]:
    """Map each time token name (as normalised by ``render``) to its text; empty for no time."""
    if task_time is None or is_zero_time(task_time):
        return {}
    if task_time.tzinfo is None:
        raise ValueError(f"task time must be timezone-aware: {task_time.isoformat()}")
    t = task_time.astimezone(UTC)
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


class _Lazy:
    """Call a zero-argument function at most once, and only if its value is asked for."""

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make
        self._value: str | None = None

    def get(self) -> str:
        if self._value is None:
            self._value = self._make()
        return self._value
