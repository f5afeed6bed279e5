"""Globs for ``files=``, as Go's ``filepath.Match`` reads them (flowlord's dialect).

``*`` is any run of characters other than ``/``, ``?`` one character other than ``/``,
``[abc]``, ``[a-z]`` and ``[^a-z]`` are classes (a class may match ``/``), ``\\`` escapes the
next character, and the pattern must match the whole path. There is no ``**``. A URL's scheme is
matched literally: ``gs://*/*/*.txt`` matches ``gs://bucket/path/file.txt``. A malformed pattern
(an unclosed ``[``, a trailing ``\\``) matches nothing, and ``check`` says why, so validation
can flag it. (Python's fnmatch is not used: its ``*`` crosses ``/``.)
"""

from __future__ import annotations

import re
from functools import lru_cache

_NEVER = "(?!)"


def match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches the glob ``pattern`` in full (Go ``filepath.Match`` rules)."""
    regex = _compile(pattern)
    return regex is not None and regex.fullmatch(path) is not None


def check(pattern: str) -> str | None:
    """Why ``pattern`` is malformed, or None when it is a usable glob."""
    try:
        _translate(pattern)
    except ValueError as exc:
        return str(exc)
    return None


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(_translate(pattern), re.DOTALL)
    except ValueError:
        return None


def _translate(pattern: str) -> str:
    """The regular expression for a glob; raises ValueError for a malformed one."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            text, i = _class(pattern, i + 1)
            out.append(text)
            continue
        elif char == "\\":
            if i + 1 == len(pattern):
                raise ValueError("trailing \\")
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the class starting after ``[`` at ``i``; returns it and the index after ``]``."""
    negated = i < len(pattern) and pattern[i] == "^"
    i += negated
    ranges: list[str] = []
    count = 0
    while True:
        if i < len(pattern) and pattern[i] == "]" and count > 0:
            break
        low, i = _class_char(pattern, i)
        high = low
        if i < len(pattern) and pattern[i] == "-":
            high, i = _class_char(pattern, i + 1)
        if low <= high:  # Go accepts a reversed range that matches nothing
            ranges.append(f"{re.escape(low)}-{re.escape(high)}")
        count += 1
    if not ranges:
        return ("(?s:.)" if negated else _NEVER), i + 1
    return f"[{'^' if negated else ''}{''.join(ranges)}]", i + 1


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) character of a class; ``-`` and ``]`` must be escaped there."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise ValueError("malformed [ class")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise ValueError("trailing \\")
    return pattern[i], i + 1
