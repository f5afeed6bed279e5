"""Round-trip editing of workflow files: create a file, add, change and remove phases, format.

A file is split into statements (a blank line, a comment, a table header, or one ``key = value``
that may span lines); the boundaries come from the TOML parser itself (the shortest run of lines
that parses on its own), so a ``[[phase]]`` inside a multi-line string is never mistaken for a
header. Statements group into blocks: a table header, the comments right above it, and everything
up to the next block. An edit replaces the statements of one phase block and splices the text
back, so every byte outside that phase stays as the user wrote it; the value itself is rewritten
with tomlkit, which keeps the key's spelling, its spacing and its trailing comment. (tomlkit on
the whole file is not used: it re-orders a file that mixes ``[[phase]]`` and ``[[Phase]]``.)

Every edit is checked twice before anything is written: the phases read back from the new text
must be exactly the ones intended (a guard against splicing mistakes), and validation must not
report an error on any phase that did not already have it. Files are rewritten atomically under
an exclusive ``flock`` so two tomlflow edits serialise, and a change by any other writer between
our read and our write is detected and refused rather than overwritten.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import secrets
import stat
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO, Any

import tomlkit

from scheduler.errors import ConcurrentEditError, WorkflowError
from scheduler.loader import RawPhase, WorkflowSource, md5_hex, parse_bytes, read_phase
from scheduler.validation import PhaseSpec, Severity, validate_file

Value = str | int
# Phase keys in the order a new phase lists them.
PHASE_KEYS = ("task", "depends_on", "rule", "retry", "template")
_CANONICAL = {key.replace("_", ""): key for key in PHASE_KEYS}
_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
_PAIR_START = re.compile(rf"[ \t]*({_DOTTED})[ \t]*=[ \t]*")
_HEADER = re.compile(rf"[ \t]*(\[\[?)[ \t]*({_DOTTED})[ \t]*(\]\]?)(.*)", re.DOTALL)
_UNKNOWN = "unknown key: "
_PARENT_MISSING = "parent task not found: "


class Kind(StrEnum):
    BLANK = "blank"
    COMMENT = "comment"
    HEADER = "header"
    PAIR = "pair"


@dataclass(frozen=True)
class Statement:
    """One statement's exact text (with its line ending); ``name`` is the header's table name or
    the pair's key as written (unquoted); ``phase_header`` marks ``[[phase]]`` in any spelling."""

    text: str
    kind: Kind
    name: str = ""
    phase_header: bool = False


@dataclass(frozen=True)
class Block:
    """A table: the comments right above its header, the header, and what follows up to the
    next block."""

    statements: tuple[Statement, ...]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.statements)

    @property
    def is_phase(self) -> bool:
        return any(s.phase_header for s in self.statements)


@dataclass(frozen=True)
class PhaseEntry:
    """A phase block and what the loader reads from it."""

    index: int  # position in Document.blocks
    table: dict[str, Any]
    raw: RawPhase


@dataclass(frozen=True)
class Document:
    """A workflow file as statements: what comes before the first table, then the blocks."""

    preamble: tuple[Statement, ...]
    blocks: tuple[Block, ...]
    newline: str

    def render(self, blocks: Sequence[Block] | None = None) -> str:
        chosen = self.blocks if blocks is None else blocks
        return "".join(s.text for s in self.preamble) + "".join(b.text for b in chosen)

    def phases(self) -> list[PhaseEntry]:
        """Every non-empty phase table in file order (the loader skips empty ones too)."""
        entries = []
        for index, block in enumerate(self.blocks):
            table = _phase_table(block) if block.is_phase else {}
            if table:
                entries.append(PhaseEntry(index, table, read_phase(table)))
        return entries


@dataclass(frozen=True)
class Edit:
    """The outcome of an edit: the new text, the phase it was about, the phases a cascade
    removed, and the warnings the edited phase now carries."""

    text: str
    task: str
    removed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


# --- reading a document -------------------------------------------------------------------


def split_document(text: str, key: str) -> Document:
    """Statements and blocks of ``text``; raises WorkflowError if it is not valid TOML."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkflowError(key, f"invalid TOML: {exc}") from None
    statements = _statements(text)
    cuts = _block_starts(statements)
    if not cuts:
        return Document(tuple(statements), (), _newline(text))
    bounds = [*cuts, len(statements)]
    blocks = tuple(Block(tuple(statements[a:b])) for a, b in itertools.pairwise(bounds))
    return Document(tuple(statements[: cuts[0]]), blocks, _newline(text))


def parse_document(text: str, key: str) -> Document:
    """``split_document`` plus the promise the editor relies on: reading the phase blocks one
    by one gives exactly the phases the loader reads from the whole file. Raises WorkflowError
    for a file that breaks it (sub-tables of a phase, an inline ``phase = [...]`` array)."""
    document = split_document(text, key)
    load = parse_bytes(key, text.encode("utf-8"))
    if load.error:
        raise WorkflowError(key, load.error)
    mine = [entry.raw for entry in document.phases()]
    if sorted(map(repr, mine)) != sorted(map(repr, load.phases)):
        raise WorkflowError(
            key, "phases are laid out in a way tomlflow cannot edit safely; edit it by hand"
        )
    return document


def _statements(text: str) -> list[Statement]:
    lines = text.splitlines(keepends=True)
    found, start = [], 0
    while start < len(lines):
        end = start + 1
        while not _parses("".join(lines[start:end])) and end < len(lines):
            end += 1
        found.append(classify("".join(lines[start:end])))
        start = end
    return found


def _parses(chunk: str) -> bool:
    try:
        tomllib.loads(chunk)
    except tomllib.TOMLDecodeError:
        return False
    return True


def classify(chunk: str) -> Statement:
    """The statement ``chunk`` is; ``chunk`` must parse as TOML on its own."""
    data = tomllib.loads(chunk)
    stripped = chunk.strip()
    if not data:
        return Statement(chunk, Kind.COMMENT if stripped.startswith("#") else Kind.BLANK)
    name = next(iter(data))
    if not stripped.startswith("["):
        return Statement(chunk, Kind.PAIR, name)
    is_phase = stripped.startswith("[[") and name.lower() == "phase" and data[name] == [{}]
    return Statement(chunk, Kind.HEADER, name, is_phase)


def _block_starts(statements: Sequence[Statement]) -> list[int]:
    """Where each block starts: its header, or the comment lines directly above it. Comments
    opening the file, directly above the first table, stay the file's own."""
    starts: list[int] = []
    for header in (i for i, s in enumerate(statements) if s.kind is Kind.HEADER):
        start = header
        while start > 0 and statements[start - 1].kind is Kind.COMMENT:
            start -= 1
        opening = all(s.kind is Kind.BLANK for s in statements[:start])
        starts.append(header if opening and not starts else start)
    return starts


def _phase_table(block: Block) -> dict[str, Any]:
    data = tomllib.loads(block.text)
    tables: list[dict[str, Any]] = next(iter(data.values()))
    return tables[0]


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


# --- spelling -------------------------------------------------------------------------------


def canonical_key(spelling: str) -> str | None:
    """The phase key a spelling stands for (``DependsOn`` → ``depends_on``), as the loader
    matches them; None for any other key."""
    return _CANONICAL.get(spelling.lower().replace("_", ""))


def table_spelling(document: Document) -> str:
    """How this file spells ``[[phase]]``: its most used spelling (the first on a tie)."""
    names = Counter(s.name for b in document.blocks for s in b.statements if s.phase_header)
    return names.most_common(1)[0][0] if names else "phase"


def key_spelling(document: Document, key: str) -> str:
    """How to write phase key ``key`` in this file: its most used spelling there; for a key the
    file never uses, capitalised (``DependsOn``) when most of the file's phase keys are."""
    used = [s.name for s in _pairs(document) if canonical_key(s.name)]
    same = Counter(name for name in used if canonical_key(name) == key)
    if same:
        return same.most_common(1)[0][0]
    if sum(name[:1].isupper() for name in used) * 2 > len(used):
        return "".join(part.capitalize() for part in key.split("_"))
    return key


def _pairs(document: Document) -> Iterator[Statement]:
    for block in document.blocks:
        if block.is_phase:
            yield from (s for s in block.statements if s.kind is Kind.PAIR)


def render_value(value: Value) -> str:
    """``value`` as a TOML literal (strings quoted and escaped)."""
    return tomlkit.item(value).as_string()


# --- finding a phase ------------------------------------------------------------------------


def find_phase(document: Document, key: str, task: str) -> PhaseEntry:
    """The phase whose normalised task is ``task``; a bare topic also matches its only job.
    Raises WorkflowError when none or several match."""
    entries = document.phases()
    found = [e for e in entries if e.raw.task == task]
    if not found and ":" not in task:
        found = [e for e in entries if e.raw.task.partition(":")[0] == task]
    if not found:
        raise WorkflowError(key, f"no phase with task {task!r}")
    tasks = sorted({e.raw.task for e in found})
    if len(tasks) > 1:
        raise WorkflowError(key, f"{task!r} matches {', '.join(tasks)}; name the job too")
    if len(found) > 1:
        raise WorkflowError(key, f"task {tasks[0]} is defined {len(found)} times; fix it by hand")
    return found[0]


# --- edits (pure: text in, Edit out) --------------------------------------------------------


def add_phase(text: str, key: str, values: Mapping[str, Value]) -> Edit:
    """Append a phase with ``values`` (canonical keys; ``task`` required), spelled as the file
    spells its phases. Raises WorkflowError if the result would not validate."""
    if not values.get("task"):
        raise WorkflowError(key, "a new phase needs a task")
    document = parse_document(text, key)
    nl = document.newline
    lines = [f"[[{table_spelling(document)}]]{nl}"] + [
        f"{key_spelling(document, name)} = {render_value(values[name])}{nl}"
        for name in PHASE_KEYS
        if name in values
    ]
    new_text = _with_separator(text, nl) + "".join(lines)
    table = {key_spelling(document, name): values[name] for name in PHASE_KEYS if name in values}
    _verify(key, new_text, [e.table for e in document.phases()] + [table])
    return _checked(key, text, new_text, read_phase(table).task, {})


def _with_separator(text: str, nl: str) -> str:
    """``text`` ending in a newline and a blank line, ready for another table ("" stays "")."""
    if not text.strip():
        return ""
    if not text.endswith(("\n", "\r")):
        text += nl
    last = text.splitlines()[-1]
    return text if not last.strip() else text + nl


def set_phase(text: str, key: str, task: str, changes: Mapping[str, Value | None]) -> Edit:
    """Set (or, for None, remove) canonical keys of the phase ``task``. A key the phase already
    has in any spelling is changed in place; a new one goes after the phase's last key. Raises
    WorkflowError if the phase is missing or the result would not validate."""
    if changes.get("task", "") is None:
        raise WorkflowError(key, "task cannot be removed; use --task to rename", phase=task)
    document = parse_document(text, key)
    entry = find_phase(document, key, task)
    block = document.blocks[entry.index]
    statements, table = list(block.statements), dict(entry.table)
    for name, value in changes.items():
        statements, table = _change_key(document, statements, table, name, value)
    blocks = list(document.blocks)
    blocks[entry.index] = Block(tuple(statements))
    new_text = document.render(blocks)
    expected = [table if e.index == entry.index else e.table for e in document.phases()]
    _verify(key, new_text, expected)
    new_task = read_phase(table).task
    return _checked(key, text, new_text, new_task, {new_task: entry.raw.task})


def _change_key(
    document: Document,
    statements: list[Statement],
    table: dict[str, Any],
    name: str,
    value: Value | None,
) -> tuple[list[Statement], dict[str, Any]]:
    """One key of a phase block changed: the statements and the table they will read as."""
    at = [i for i, s in enumerate(statements) if _is_key(s, name)]
    table = {k: v for k, v in table.items() if canonical_key(k) != name}
    if value is None:
        return [s for i, s in enumerate(statements) if i not in at], table
    if at:
        first = statements[at[0]]
        kept = [s for i, s in enumerate(statements) if i not in at[1:]]
        kept[at[0]] = _with_value(first, value)
        return kept, {**table, first.name: value}
    spelling = key_spelling(document, name)
    return _insert_key(statements, spelling, value, document.newline), {**table, spelling: value}


def _is_key(statement: Statement, name: str) -> bool:
    return statement.kind is Kind.PAIR and canonical_key(statement.name) == name


def _with_value(statement: Statement, value: Value) -> Statement:
    """The pair with a new value; its key spelling, spacing and comment kept (tomlkit)."""
    pair = tomlkit.parse(statement.text)
    pair[statement.name] = value
    return classify(tomlkit.dumps(pair))


def _insert_key(
    statements: list[Statement], spelling: str, value: Value, nl: str
) -> list[Statement]:
    """A new pair after the block's last pair (or its header), indented like that pair."""
    pairs = [i for i, s in enumerate(statements) if s.kind is Kind.PAIR]
    after = pairs[-1] if pairs else next(i for i, s in enumerate(statements) if s.phase_header)
    anchor = statements[after]
    indent = anchor.text[: len(anchor.text) - len(anchor.text.lstrip(" \t"))] if pairs else ""
    if not anchor.text.endswith(("\n", "\r")):
        anchor = classify(anchor.text + nl)
    line = classify(f"{indent}{spelling} = {render_value(value)}{nl}")
    return [*statements[:after], anchor, line, *statements[after + 1 :]]


def remove_phase(text: str, key: str, task: str, cascade: bool = False) -> Edit:
    """Remove the phase ``task``. Phases left without their parent by it are removed too when
    ``cascade`` (transitively, listed in ``Edit.removed``); otherwise the edit is refused."""
    document = parse_document(text, key)
    entries = document.phases()
    target = find_phase(document, key, task)
    before = _specs(key, text)
    dropped, removed = {target.index}, [target.raw.task]
    while True:
        new_text = _without(document, dropped)
        orphans = _orphans(key, before, _specs(key, new_text))
        if not orphans:
            break
        removed += orphans
        dropped |= {e.index for e in entries if e.raw.task in orphans}
    if len(removed) > 1 and not cascade:
        dependents = ", ".join(removed[1:])
        raise WorkflowError(
            key,
            f"refused: other phases depend on it: {dependents} (--cascade removes them too)",
            phase=target.raw.task,
        )
    _verify(key, new_text, [e.table for e in entries if e.index not in dropped])
    return Edit(new_text, target.raw.task, removed=tuple(removed[1:]))


def _orphans(key: str, before: dict[str, PhaseSpec], after: dict[str, PhaseSpec]) -> list[str]:
    """Phases that lost their parent; raises WorkflowError for any other new error."""
    orphans = []
    for phase, problems in _new_errors(before, after, {}):
        if not all(p.startswith(_PARENT_MISSING) for p in problems):
            raise WorkflowError(key, f"refused: {'; '.join(problems)}", phase=phase)
        orphans.append(phase)
    return orphans


def _without(document: Document, dropped: set[int]) -> str:
    kept = [b for i, b in enumerate(document.blocks) if i not in dropped]
    text = document.render(kept)
    if document.blocks and len(document.blocks) - 1 in dropped:
        # The separator before a removed last table goes with it.
        lines = text.splitlines(keepends=True)
        while lines and not lines[-1].strip():
            lines.pop()
        text = "".join(lines)
    return text


# --- checks ---------------------------------------------------------------------------------


def _verify(key: str, new_text: str, expected: list[dict[str, Any]]) -> None:
    """The new text must read back as exactly the intended phase tables, in order."""
    try:
        got = [e.table for e in parse_document(new_text, key).phases()]
    except WorkflowError:
        got = None
    if got != expected:
        raise WorkflowError(
            key, "internal error: the edit would not read back as intended; nothing written"
        )


def _specs(key: str, text: str) -> dict[str, PhaseSpec]:
    load = parse_bytes(key, text.encode("utf-8"))
    return {spec.task: spec for spec in validate_file(key, load.phases)}


def _errors(spec: PhaseSpec | None) -> list[str]:
    if spec is None or spec.severity is not Severity.ERROR:
        return []
    return [part for part in spec.status.split("; ") if not part.startswith(_UNKNOWN)]


def _new_errors(
    before: Mapping[str, PhaseSpec], after: Mapping[str, PhaseSpec], renamed: Mapping[str, str]
) -> list[tuple[str, list[str]]]:
    """Per phase (by task after the edit), the error messages it did not have before."""
    found = []
    for task, spec in after.items():
        old = _errors(before.get(renamed.get(task, task)))
        problems = [p for p in _errors(spec) if p not in old]
        if problems:
            found.append((task, problems))
    return found


def _checked(key: str, text: str, new_text: str, task: str, renamed: Mapping[str, str]) -> Edit:
    """The edit, unless it gives any phase an error it did not have (raises WorkflowError)."""
    after = _specs(key, new_text)
    for phase, problems in _new_errors(_specs(key, text), after, renamed):
        raise WorkflowError(key, f"refused: {'; '.join(problems)}", phase=phase)
    spec = after.get(task)
    warnings = [p for p in spec.status.split("; ") if p.startswith(_UNKNOWN)] if spec else []
    return Edit(new_text, task, warnings=tuple(warnings))


# --- formatting -----------------------------------------------------------------------------


def format_text(text: str, key: str) -> str:
    """``text`` with spacing normalised and nothing else: no indentation, ``key = value``, no
    trailing spaces, one blank line between tables and at most one in a row anywhere, a final
    newline. String contents are never touched. Raises WorkflowError for invalid TOML, or if
    the result would read differently (it then writes nothing)."""
    document = split_document(text, key)
    nl = document.newline
    parts = [_tidy(b.statements, nl) for b in document.blocks]
    preamble = _tidy(document.preamble, nl)
    if preamble and parts and document.preamble[-1].kind is not Kind.BLANK:
        parts[0] = preamble + parts[0]  # a file comment written right above the first table
    elif preamble:
        parts.insert(0, preamble)
    formatted = nl.join(part for part in parts if part)
    if tomllib.loads(formatted) != tomllib.loads(text):
        raise WorkflowError(key, "internal error: formatting would change the file's meaning")
    return formatted


def _tidy(statements: Sequence[Statement], nl: str) -> str:
    """Statements normalised, without blank lines at either end, after a header, or in a row."""
    out: list[str] = []
    previous = Kind.BLANK
    for statement in statements:
        if statement.kind is Kind.BLANK and previous in (Kind.BLANK, Kind.HEADER):
            continue
        out.append(_tidy_statement(statement, nl))
        previous = statement.kind
    while out and not out[-1].strip():
        out.pop()
    return "".join(out)


def _tidy_statement(statement: Statement, nl: str) -> str:
    text = statement.text
    if statement.kind is Kind.BLANK:
        return nl
    if statement.kind is Kind.COMMENT:
        return text.strip() + nl
    if statement.kind is Kind.HEADER:
        match = _HEADER.fullmatch(text)
        if match:
            opening, name, closing, rest = match.groups()
            text = f"{opening}{name}{closing}{rest}"
    else:
        match = _PAIR_START.match(text)
        if match:
            text = f"{match.group(1)} = {text[match.end() :]}"
    # Only the end of the statement's last line is stripped: it lies after any closing quote.
    return text.lstrip(" \t").rstrip(" \t\r\n") + nl


# --- files ----------------------------------------------------------------------------------


def new_workflow_text(key: str) -> str:
    """The text of a new workflow file: comments explaining the keys and an example phase pair,
    commented out so that nothing is scheduled until the user says so."""
    return NEW_WORKFLOW.format(key=key)


NEW_WORKFLOW = """\
# {key}: a tomlflow workflow. Each [[phase]] table is one step.
# `tomlflow validate` checks the file; `tomlflow phases` lists what was loaded.
#
#   task        topic or topic:job (required)
#   rule        a query string: cron=0 5 * * *&offset=-24h&retry_delay=5m
#   depends_on  a parent in this file (topic or topic:job); runs when the parent completes
#   retry       extra attempts after a failure (default 0)
#   template    the command; {{yyyy}} {{mm}} {{dd}} {{hh}} {{meta:key}} are filled in
#
# Add phases by hand or with `tomlflow phase add {key} --task ...`. An example:
#
# [[phase]]
# task = "extract:orders"
# rule = "cron=0 5 * * *&offset=-24h"   # 05:00 every day, for yesterday's data
# template = "echo extract orders for {{yyyy}}-{{mm}}-{{dd}}"
#
# [[phase]]
# task = "load"
# depends_on = "extract"                # runs when extract completes, with its task time
# retry = 2
# template = "echo load {{yyyy}}-{{mm}}-{{dd}}"
"""


def workflow_folder(workflows: Path) -> Path:
    """The folder new workflow files go in; raises WorkflowError in single-file mode."""
    if workflows.exists() and not workflows.is_dir():
        raise WorkflowError(str(workflows), "workflows is a single file, not a folder")
    return workflows


def new_file_path(folder: Path, name: str) -> tuple[Path, str]:
    """Where workflow ``name`` goes (``.toml`` added if missing) and its file key. Raises
    WorkflowError for a name the loader would not read (absolute, ``..``, hidden parts)."""
    key = name if name.endswith(".toml") else f"{name}.toml"
    parts = PurePosixPath(key).parts
    bad = key.startswith("/") or "\\" in key or "//" in key
    if bad or not parts or any(p in (".", "..") or p.startswith(".") for p in parts):
        raise WorkflowError(name, "a workflow name is a relative path without '.' or '..' parts")
    path = folder.joinpath(*parts)
    if not _inside(folder, path):  # a sub-folder that is a symbolic link to elsewhere
        raise WorkflowError(str(path), f"outside the workflow folder {folder}: not written")
    return path, "/".join(parts)


def resolve_file(workflows: Path, given: str) -> tuple[Path, str]:
    """The workflow file ``given`` names (relative to the workflow folder, ``.toml`` optional,
    or an existing path) and its file key. Raises WorkflowError if there is none, or if it is
    not a workflow file (see ``check_workflow_file``)."""
    root = workflows if workflows.is_dir() else workflows.parent
    names = [given] if given.endswith(".toml") else [given, f"{given}.toml"]
    for candidate in [root / name for name in names] + [Path(name) for name in names]:
        if candidate.is_file():
            check_workflow_file(workflows, candidate)
            return candidate, _key_of(root, candidate)
    raise WorkflowError(given, f"no such workflow file (looked in {root})")


def check_workflow_file(workflows: Path, path: Path) -> None:
    """Raises WorkflowError naming ``path`` unless it is a file an edit may write: a ``*.toml``
    inside the workflow folder, or the workflow file itself in single-file mode. A symbolic
    link counts as where it points and as where it stands (writing replaces the link), so
    both must be inside; this keeps the config file and everything else out of reach."""
    if workflows.is_dir():
        allowed = path.name.endswith(".toml") and _inside(workflows, path)
    else:
        allowed = _lexical(path) == _lexical(workflows) and path.resolve() == workflows.resolve()
    if not allowed:
        raise WorkflowError(str(path), f"outside the workflow folder {workflows}: not edited")


def _inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` is below ``folder`` both as written and with symbolic links followed."""
    written = any(_lexical(path).is_relative_to(f) for f in (_lexical(folder), folder.resolve()))
    real = path.resolve().is_relative_to(folder.resolve())
    return written and real and path.resolve() != folder.resolve()


def _lexical(path: Path) -> Path:
    """``path`` absolute with ``..`` folded away, symbolic links left as they are."""
    return Path(os.path.normpath(path.absolute()))


def _key_of(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def workflow_files(workflows: Path) -> list[tuple[Path, str]]:
    """Every workflow file under the workflow path, with its key."""
    if not workflows.exists():
        raise WorkflowError(str(workflows), "no such file or folder")
    return [(path, key) for key, path in WorkflowSource(workflows).files().items()]


def create_file(path: Path, key: str, text: str) -> None:
    """Create ``path`` holding ``text`` in one step; raises WorkflowError if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _write_temp(path, text.encode("utf-8"))
    try:
        os.link(temp, path)  # fails if the file exists: never clobbers
    except FileExistsError:
        raise WorkflowError(key, "already exists") from None
    finally:
        temp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def edit_file(path: Path, key: str, change: Callable[[str], Edit]) -> Edit:
    """Apply ``change`` to the file's text under an exclusive lock and write the result
    atomically (only when it differs). Raises WorkflowError for an unreadable file or a refused
    edit, ConcurrentEditError if another program changed the file meanwhile."""
    with _locked(path, key) as handle:
        data = handle.read()
        edit = change(_decode(data, key))
        new = edit.text.encode("utf-8")
        if new != data:
            _replace(path, key, data, new)
    return edit


def _decode(data: bytes, key: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(key, f"not UTF-8 text: byte {exc.start}") from None


@contextmanager
def _locked(path: Path, key: str) -> Iterator[IO[bytes]]:
    """The file, open and exclusively flock-ed. The lock is on the file itself, and a rename
    swaps the file under the name, so after waiting we check the name still points at what we
    locked, and lock the new file if not."""
    while True:
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise WorkflowError(key, "no such file") from None
        except OSError as exc:
            raise WorkflowError(key, f"cannot open: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            if _same_file(handle, path):
                break
        except BaseException:
            handle.close()
            raise
        handle.close()
    with handle:  # closing releases the lock
        yield handle


def _same_file(handle: IO[bytes], path: Path) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _replace(path: Path, key: str, original: bytes, new: bytes) -> None:
    """Swap in ``new`` atomically, keeping the permission bits, unless the file no longer
    holds ``original`` (another program wrote it): then ConcurrentEditError."""
    temp = _write_temp(path, new)
    try:
        os.chmod(temp, stat.S_IMODE(path.stat().st_mode))
        if md5_hex(_current(path)) != md5_hex(original):
            raise ConcurrentEditError(
                key, "changed by another program during the edit; nothing written, try again"
            )
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _sync_folder(path.parent)


def _current(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _write_temp(path: Path, data: bytes) -> Path:
    """A hidden, fsync-ed temporary file next to ``path`` (the loader skips it)."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _sync_folder(folder: Path) -> None:
    """Make the rename durable; a filesystem that cannot sync folders is not an error."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def format_file(path: Path, key: str, check: bool = False) -> bool:
    """Whether the file's formatting changes (is changed, unless ``check``)."""
    if check:
        try:
            text = _decode(path.read_bytes(), key)
        except OSError as exc:
            raise WorkflowError(key, f"cannot read: {exc.strerror or exc}") from None
        return format_text(text, key) != text
    before: list[bool] = []

    def change(text: str) -> Edit:
        formatted = format_text(text, key)
        before.append(formatted != text)
        return Edit(formatted, "")

    edit_file(path, key, change)
    return before[0]
