"""Workflow files → phase specs.

A workflow path is a file or a folder; a folder is read recursively and only ``*.toml`` files are
workflows. Each file holds ``[[phase]]`` tables whose table and key names match case-insensitively
(``[[Phase]]``, ``dependsOn``, ``depends_on``), as flowlord reads them. Reading never raises for bad
content: a file that cannot be parsed becomes a ``FileLoad`` with ``error`` set, and a phase with
bad values gets its problems from ``validation``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import tomli

from scheduler.rules import query_pairs

# Phase keys, normalised: lower case with "_" removed, mapped to our field names.
_PHASE_KEYS = {
    "task": "task",
    "rule": "rule",
    "dependson": "depends_on",
    "retry": "retry",
    "template": "template",
}


@dataclass(frozen=True)
class RawPhase:
    """One ``[[phase]]`` table as written, before validation."""

    task: str = ""
    rule: str = ""
    depends_on: str = ""
    retry: int = 0
    template: str = ""
    problems: tuple[str, ...] = ()  # bad values: errors
    unknown_keys: tuple[str, ...] = ()  # warnings
    # 1-based among the file's [[phase]] tables (0: unknown); where a phase is, not what it is
    position: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class FileLoad:
    """What reading one workflow file gave: its phases, or the error that stopped it."""

    file_path: str  # the key: relative to the workflow folder, "/" separators
    file_hash: str  # md5 hex of the bytes ("" when unreadable)
    last_modified: datetime | None
    phases: tuple[RawPhase, ...] = ()
    error: str = ""


class SourceFile(NamedTuple):
    """A workflow file found on disk, with what ``stat`` said of it when it was found."""

    key: str
    path: str
    size: int  # -1 when stat failed (a dangling link): reading it reports the error
    mtime_ns: int


# What the walk keeps of each file, by key: (path, size, mtime_ns) as for SourceFile. A plain
# tuple, not a SourceFile: the garbage collector stops tracking a plain tuple of strings and
# ints, and one per file tracked made an unchanged refresh of many files pay for collections.
Found = tuple[str, int, int]


@dataclass(frozen=True)
class WorkflowSource:
    """Where workflows live: a folder (read recursively) or a single file."""

    path: Path
    is_dir: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_dir", self.path.is_dir())

    def files(self) -> dict[str, Path]:
        """Every workflow file now present, by key, in key order."""
        return {key: Path(found.path) for key, found in self.scan().items()}

    def scan(self) -> dict[str, SourceFile]:
        """Every workflow file now present with its size and modification time, by key, in key
        order."""
        return {key: SourceFile(key, *found) for key, found in sorted(self.stat_all().items())}

    def stat_all(self) -> dict[str, Found]:
        """Every workflow file now present with its size and modification time, by key, in no
        particular order. One ``stat`` per file and no reads: refresh decides from these what
        to read (and sorts only what it reads)."""
        if not self.is_dir:
            try:
                st = os.stat(self.path)
            except OSError:
                return {}
            return {self.path.name: (os.fspath(self.path), st.st_size, st.st_mtime_ns)}
        return _scan_toml(os.fspath(self.path))


def _scan_toml(root: str) -> dict[str, Found]:
    """Walk ``root`` on plain strings (no path objects: a refresh of many files is mostly this).

    Hidden files and folders are skipped. A key is the path below ``root`` unless ``root``'s last
    segment appears again below it, where ``file_key``'s embedded-root rule decides.
    """
    root_name = _segments(root)[-1] if _segments(root) else ""
    found: dict[str, Found] = {}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # a folder that vanished or can't be listed holds no workflows now
        # a folder below root named as root: its files' keys follow file_key's rule
        embedded = bool(root_name) and root_name in prefix.split("/")
        for entry in entries:
            name = entry.name
            if name[0] == ".":
                continue
            try:
                if entry.is_dir(follow_symlinks=False):  # as os.walk: links to folders not followed
                    stack.append((entry.path, f"{prefix}{name}/"))
                    continue
            except OSError:
                continue  # removed between listing and the check: gone for this refresh
            if not name.endswith(".toml"):
                continue
            key = file_key(root, entry.path) if embedded else prefix + name
            try:
                st = entry.stat()
                size, mtime_ns = st.st_size, st.st_mtime_ns
            except OSError:  # a dangling link: listed, so that reading it reports the error
                size = mtime_ns = -1
            found[key if key.isascii() else _storable(key)] = (entry.path, size, mtime_ns)
    return found


def file_key(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """The key of ``path`` under the workflow path ``root``: ``./path`` + ``./path/sub/f.toml`` →
    ``sub/f.toml``. Where ``root``'s segments appear inside ``path`` (an embedded root, as
    flowlord allows), the key is what follows their last appearance; else the base name."""
    root_parts = _segments(root)
    parts = _segments(path)
    width = len(root_parts)
    for start in range(len(parts) - width, -1, -1):
        if parts[start : start + width] == root_parts:
            rest = parts[start + width :]
            return "/".join(rest) if rest else parts[-1]
    return parts[-1] if parts else ""


def _segments(path: str | os.PathLike[str]) -> list[str]:
    text = os.path.normpath(os.fspath(path)).replace(os.sep, "/")
    return [part for part in PurePosixPath(text).parts if part not in (".", "/")]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _storable(key: str) -> str:
    """A key the database can hold: bytes of a file name that are not UTF-8 (which Python keeps
    as lone surrogates) become U+FFFD, so such a file loads under a readable key."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return key


def read_source(path: str | os.PathLike[str]) -> tuple[bytes, datetime]:
    """A workflow file's bytes and modification time (UTC); raises OSError."""
    with open(path, "rb") as handle:
        data = handle.read()
        mtime = os.fstat(handle.fileno()).st_mtime
    return data, datetime.fromtimestamp(mtime, UTC)


def parse_bytes(key: str, data: bytes, modified: datetime | None = None) -> FileLoad:
    """Parse a workflow file's bytes. Never raises: problems land in ``error``."""
    digest = md5_hex(data)
    try:
        # tomli: tomllib's parser, compiled (twice as fast on a cold load of many files).
        # utf-8-sig: a byte order mark (as some editors write) is not part of the text.
        document = tomli.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        return FileLoad(key, digest, modified, error=f"not UTF-8 text: byte {exc.start}")
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        return FileLoad(key, digest, modified, error=f"invalid TOML: {exc}")
    except RecursionError:  # tomllib recurses per nesting level
        return FileLoad(key, digest, modified, error="invalid TOML: nested too deeply")
    # [[phase]] and [[Phase]] are two keys to TOML but one table name to flowlord: join them.
    arrays = [value for name, value in document.items() if name.lower() == "phase"]
    if not all(_is_table_array(value) for value in arrays):
        return FileLoad(key, digest, modified, error="'phase' must be an array of tables")
    tables = [table for array in arrays for table in array]
    phases = tuple(read_phase(t, position=n) for n, t in enumerate(tables, 1) if t)
    return FileLoad(key, digest, modified, phases=phases)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def read_phase(table: dict[str, Any], position: int = 0) -> RawPhase:
    """One ``[[phase]]`` table → RawPhase, keys matched case-insensitively."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    unknown: list[str] = []
    for key, value in table.items():
        name = _field(key)
        if name is None:
            unknown.append(key)
        elif name in values:
            problems.append(f"duplicate key: {key}")
        elif isinstance(value, str) if name != "retry" else _whole(value):
            values[name] = value
        else:
            problems.append(_type_problem(key, name, value))
    task = values.get("task", "")
    rule = values.get("rule", "")
    if not task:
        problems.append("missing key: task")
    return RawPhase(
        normalise_task(task, rule),
        rule,
        values.get("depends_on", ""),
        values.get("retry", 0),
        values.get("template", ""),
        tuple(problems),
        tuple(unknown),
        position,
    )


@lru_cache(maxsize=1024)
def _field(key: str) -> str | None:
    """The field a key names (None: unknown). Files repeat a handful of spellings, so each
    is normalised once."""
    return _PHASE_KEYS.get(key.lower().replace("_", ""))


def _whole(value: Any) -> bool:
    """A retry count: a whole number of at least 0 (TOML's booleans are no numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _type_problem(key: str, name: str, value: Any) -> str:
    want = "a whole number of at least 0" if name == "retry" else "a string"
    return f"invalid value: {key}={value!r} (want {want})"


def normalise_task(task: str, rule: str) -> str:
    """``topic:job`` when there is a job (from ``task`` or the rule's ``job``), else ``topic``."""
    topic, sep, job = task.partition(":")
    if sep:
        return f"{topic}:{job}"
    job = rule_job(rule)
    return f"{topic}:{job}" if job else topic


def rule_job(rule: str) -> str:
    """The rule's ``job`` value, or "" (also for a rule too broken to read)."""
    if "job" not in rule and "%" not in rule:
        return ""  # no key can read "job" (only a % escape could spell it otherwise)
    try:
        pairs = query_pairs(rule)
    except ValueError:
        return ""
    return next((value for key, value in pairs if key == "job"), "")
