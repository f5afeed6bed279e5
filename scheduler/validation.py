"""Raw phases → validated phase specs, each with the status message users see.

Checks, in the order their messages are listed in a status: the phase's own values (types, and
ranges: nothing may overflow a database column or hold a NUL byte), its rule (format, cron,
durations, values), that it is scheduled at all (a cron, ``depends_on``, ``files`` or ``manual``),
that its parent exists in the same file, that it is on no dependency cycle (each one it is on
is named, in order of their tasks, so a status reads the same in every run), and that its task
is not defined twice. Errors stop a phase from firing; warnings (unknown keys, unknown template
tokens, a cron that never fires, a cron beside ``manual``) do not. A status is "" when the phase
is clean.

Whatever a phase holds, its spec can be stored: a task that cannot be a key (missing, too long,
holding a NUL byte) is replaced by the phase's position (``phase 3``), other unstorable values by
harmless ones, and the status (which names what was wrong) is cut to ``MAX_STATUS_BYTES``.

Whether a phase has a command at all depends on the configuration's ``[workers]`` as well as
on its file, so that check (``require_command``) is applied when phases are read, not stored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache

from scheduler import graph, templates
from scheduler.config import WorkerConfig
from scheduler.errors import RuleError
from scheduler.loader import RawPhase
from scheduler.rules import Rule, parse_rule, shown

NON_SCHEDULED = "non-scheduled phase: use depends_on, cron or files"
NO_COMMAND = "no command: set template or a [workers] command"
# attempt = retry + 1 is stored in a 32-bit integer column
MAX_RETRY = 2**31 - 2
# task and depends_on are VARCHAR(512) columns; bytes, so the (file_path, task) key stays
# within PostgreSQL's btree entry size too
MAX_NAME_BYTES = 512
# status is indexed: PostgreSQL refuses btree entries of more than about 2700 bytes
MAX_STATUS_BYTES = 2000
_REPLACEMENT = "\ufffd"  # stands for a NUL byte in stored text
_POSITION = re.compile(r"phase \d+")


class Severity(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class PhaseSpec:
    """A phase as the scheduler uses it. ``rule`` is None when the rule text is unusable."""

    file_path: str
    task: str
    depends_on: str
    rule_text: str
    template: str
    retry: int
    rule: Rule | None
    status: str
    severity: Severity

    @property
    def topic(self) -> str:
        return self.task.partition(":")[0]

    @property
    def job(self) -> str:
        return self.task.partition(":")[2]

    @property
    def runnable(self) -> bool:
        return self.severity is not Severity.ERROR and self.rule is not None

    @property
    def where(self) -> str:
        """How a message names the phase: ``w.toml [task]``, or ``w.toml phase 3`` for one
        whose own task was missing or unusable (its key is then its position)."""
        unnamed = _POSITION.fullmatch(self.task) and any(
            problem in self.status for problem in ("missing key: task", "invalid value: task=")
        )
        return f"{self.file_path} {self.task}" if unnamed else f"{self.file_path} [{self.task}]"


# A validated phase as workflow_phases stores it, in its column order: (file_path, task,
# depends_on, rule, template, retry, status, severity)
StoredPhase = tuple[str, str, str, str, str, int, str, str]


def validate_file(file_path: str, phases: Sequence[RawPhase]) -> list[PhaseSpec]:
    """Validate every phase of one file against each other; one spec per distinct task.

    Never raises for what a phase holds: every problem becomes part of its spec's status.
    """
    return [
        PhaseSpec(*values[:6], rule, values[6], severity)
        for values, rule, severity in _validated(file_path, phases)
    ]


def validate_rows(file_path: str, phases: Sequence[RawPhase]) -> list[StoredPhase]:
    """``validate_file``'s specs as the rows ``workflow_phases`` stores, and nothing more: a
    cold load stores a row per phase, and building a spec first cost a tenth of it."""
    return [values for values, _, _ in _validated(file_path, phases)]


def _validated(
    file_path: str, phases: Sequence[RawPhase]
) -> Iterator[tuple[StoredPhase, Rule | None, Severity]]:
    """Per distinct task, where it is first defined: its stored values, rule and severity.

    The file's tasks are indexed once for the parent and cycle checks; the networkx graph
    is built only for a file that has a cycle, to name it.
    """
    phases = [_named(raw, index) for index, raw in enumerate(phases, 1)]
    tasks = _Tasks(phases)
    checked = [_check(raw, tasks) for raw in phases]
    if not tasks.acyclic(phases):
        _check_cycles(file_path, phases, tasks, [errors for _, errors in checked])
    counts = Counter(raw.task for raw in phases) if len(tasks.first) < len(phases) else None
    for number in tasks.first.values():
        raw = phases[number]
        read, errors = checked[number]
        if counts is not None and counts[raw.task] > 1:
            errors.append(f"duplicate task: {shown(raw.task)} defined {counts[raw.task]} times")
        values, severity = _stored(file_path, raw, errors, _warnings(raw, read))
        yield values, read.rule, severity


def require_command(spec: PhaseSpec, workers: Mapping[str, WorkerConfig]) -> PhaseSpec:
    """``spec``, made an error when it has neither a template nor a worker that runs it."""
    if spec.template.strip() or NO_COMMAND in spec.status:
        return spec
    worker = workers.get(spec.task) if spec.job else None
    worker = worker or workers.get(spec.topic)
    if worker is not None and (worker.command or worker.python):
        return spec
    status = "; ".join(part for part in (NO_COMMAND, spec.status) if part)
    return replace(spec, status=status, severity=Severity.ERROR)


def _named(raw: RawPhase, index: int) -> RawPhase:
    """``raw`` with a task that can be a key: its position (``phase 3``) when its own can't."""
    if raw.task[:1] not in ("", ":") and _storable_name(raw.task):
        return raw  # the usual phase: a topic, and a name any column takes
    problems = raw.problems
    if raw.task and raw.task.partition(":")[0]:
        problems += (f"invalid value: task={shown(raw.task)} ({_name_problem(raw.task)})",)
    elif "missing key: task" not in problems:
        problems += (f"invalid value: task={shown(raw.task)} (want topic or topic:job)",)
    return replace(raw, task=f"phase {raw.position or index}", problems=problems)


def _storable_name(text: str) -> bool:
    if "\0" in text:
        return False
    # a character is at most 4 bytes: most names need no encoding to be measured
    return len(text) * 4 <= MAX_NAME_BYTES or len(text.encode("utf-8")) <= MAX_NAME_BYTES


def _name_problem(text: str) -> str:
    return "NUL byte" if "\0" in text else f"longer than {MAX_NAME_BYTES} bytes"


def _value_problems(raw: RawPhase) -> list[str]:
    """The phase's own values that are of the right type but out of range."""
    problems = []
    if not 0 <= raw.retry <= MAX_RETRY:
        problems.append(f"invalid value: retry={shown(str(raw.retry))} (want 0 to {MAX_RETRY})")
    if not _storable_name(raw.depends_on):
        text = raw.depends_on
        problems.append(f"invalid value: depends_on={shown(text)} ({_name_problem(text)})")
    if "\0" in raw.template:
        problems.append(f"invalid value: template={shown(raw.template)} (NUL byte)")
    return problems


@dataclass(frozen=True, slots=True)
class _ReadRule:
    """A rule text read once for every phase that shares it: the rule (None when unusable),
    its error ("" when none), whether it schedules the phase, and its warnings."""

    rule: Rule | None
    problem: str
    scheduled: bool
    warnings: tuple[str, ...]


@lru_cache(maxsize=8192)
def _read_rule(text: str) -> _ReadRule:
    try:
        rule = parse_rule(text)
    except RuleError as exc:
        return _ReadRule(None, exc.status, False, ())
    scheduled = rule.cron is not None or rule.never_fires or rule.manual or bool(rule.files)
    warnings = [f"unknown key: {shown(key)}" for key in rule.unknown]
    if rule.never_fires:
        warnings.append(f"cron never fires: {shown(rule.cron_text)}")
    elif rule.manual and rule.cron_text:
        warnings.append(f"cron ignored: manual phase has no schedule ({shown(rule.cron_text)})")
    return _ReadRule(rule, "", scheduled, tuple(warnings))


@lru_cache(maxsize=8192)
def _token_warnings(template: str) -> tuple[str, ...]:
    # templates repeat across phases and files: scanning each distinct one once pays
    tokens = templates.unknown_tokens(template)
    return tuple(f"unknown template token: {shown(token)}" for token in tokens)


def _check(raw: RawPhase, tasks: _Tasks) -> tuple[_ReadRule, list[str]]:
    """The phase's rule, and its errors in status order: its own values, its rule, whether it
    is scheduled, its parent. (Cycles and duplicates are added by the file's checks.)"""
    read = _read_rule(raw.rule)
    errors = list(raw.problems)
    errors.extend(_value_problems(raw))
    if read.problem:
        errors.append(read.problem)
    elif not raw.depends_on and not read.scheduled:
        errors.append(NON_SCHEDULED)
    if raw.depends_on and not tasks.parents(raw.depends_on):
        errors.append(f"parent task not found: {raw.depends_on}")
    return read, errors


class _Tasks:
    """One file's tasks: the row each is first defined on, and the tasks of each topic. A
    ``depends_on`` names tasks of its own file only, by topic or exactly, as in ``graph``."""

    def __init__(self, phases: Sequence[RawPhase]) -> None:
        self.first: dict[str, int] = {}  # a duplicated task is kept (and reported) on its first
        for number, raw in enumerate(phases):
            self.first.setdefault(raw.task, number)
        self.by_topic: dict[str, list[str]] = {}
        for task in self.first:
            self.by_topic.setdefault(task.partition(":")[0], []).append(task)

    def parents(self, depends_on: str) -> Sequence[str]:
        """The tasks ``depends_on`` names (empty when none)."""
        if ":" in depends_on:
            return (depends_on,) if depends_on in self.first else ()
        return self.by_topic.get(depends_on, ())

    def acyclic(self, phases: Sequence[RawPhase]) -> bool:
        """True when the parent → child edges of ``phases`` form no cycle.

        When every edge runs from a task first defined earlier in the file to one defined
        later (the usual file: parents written first), that order is a topological one and
        there is no cycle; otherwise Kahn's algorithm decides.
        """
        first = self.first
        for raw in phases:
            if raw.depends_on:
                child = first[raw.task]
                for parent in self.parents(raw.depends_on):
                    if first[parent] >= child:
                        return self._sortable(phases)
        return True

    def _sortable(self, phases: Sequence[RawPhase]) -> bool:
        """Kahn's algorithm: every task can be taken once all its parents were."""
        children: dict[str, set[str]] = {}
        waiting = dict.fromkeys(self.first, 0)  # per task: its parents not taken yet
        for raw in phases:
            for parent in self.parents(raw.depends_on) if raw.depends_on else ():
                kids = children.setdefault(parent, set())
                if raw.task not in kids:
                    kids.add(raw.task)
                    waiting[raw.task] += 1
        ready = [task for task, count in waiting.items() if count == 0]
        taken = 0
        while ready:
            taken += 1
            for child in children.get(ready.pop(), ()):
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        return taken == len(waiting)


def _check_cycles(
    file_path: str, phases: Sequence[RawPhase], tasks: _Tasks, errors: list[list[str]]
) -> None:
    """Name each cycle on every task on it, on the task's first row (``errors`` runs parallel
    to ``phases``)."""
    dag = graph.build(_Node(file_path, raw.task, raw.depends_on) for raw in phases)
    # sorted: networkx finds cycles in an order that varies with string hashing, so a status
    # naming several would read differently from one run (or process) to the next
    for cycle in sorted(graph.cycles(dag)):
        message = graph.describe_cycle(cycle)
        for _, task in cycle:
            if message not in errors[tasks.first[task]]:
                errors[tasks.first[task]].append(message)


def _warnings(raw: RawPhase, read: _ReadRule) -> tuple[str, ...]:
    tokens = _token_warnings(raw.template)
    if not raw.unknown_keys:
        return read.warnings + tokens if read.warnings else tokens
    return tuple(f"unknown key: {shown(key)}" for key in raw.unknown_keys) + read.warnings + tokens


def _stored(
    file_path: str, raw: RawPhase, errors: list[str], warnings: tuple[str, ...]
) -> tuple[StoredPhase, Severity]:
    """The stored values of ``raw``, every one storable (a bad value is an error in the status,
    and what is stored in its place only has to fit: the phase never runs), and its severity."""
    if errors or warnings:
        severity = Severity.ERROR if errors else Severity.WARNING
        status = _storable_status("; ".join((*errors, *warnings)))
    else:
        severity, status = Severity.OK, ""
    values = (
        file_path,
        raw.task,
        raw.depends_on if _storable_name(raw.depends_on) else "",
        _storable_text(raw.rule),
        _storable_text(raw.template),
        raw.retry if 0 <= raw.retry <= MAX_RETRY else 0,
        status,
        _SEVERITY_TEXT[severity],
    )
    return values, severity


_SEVERITY_TEXT = {severity: severity.value for severity in Severity}  # .value is slow per row


def _storable_text(text: str) -> str:
    """Text a database column takes: no NUL byte (PostgreSQL refuses it). (Lone surrogates
    cannot occur: TOML refuses them and rule values decode with replacement.)"""
    return text.replace("\0", _REPLACEMENT) if "\0" in text else text


def _storable_status(status: str) -> str:
    status = _storable_text(status)
    if len(status) * 4 <= MAX_STATUS_BYTES:
        return status
    data = status.encode("utf-8")
    if len(data) <= MAX_STATUS_BYTES:
        return status
    return data[: MAX_STATUS_BYTES - 3].decode("utf-8", "ignore") + "…"


@dataclass(frozen=True)
class _Node:
    file_path: str
    task: str
    depends_on: str
