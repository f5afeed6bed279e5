"""Raw phases → validated phase specs, each with the status message users see.

Checks, in the order their messages are listed in a status: the phase's own values (types, and
ranges: nothing may overflow a database column or hold a NUL byte), its rule (format, cron,
durations, values), that it is scheduled at all (a cron, ``depends_on``, ``files`` or ``manual``),
that its parent exists in the same file, that it is on no dependency cycle, and that its task is
not defined twice. Errors stop a phase from firing; warnings (unknown keys, unknown template
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

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


def validate_file(file_path: str, phases: Sequence[RawPhase]) -> list[PhaseSpec]:
    """Validate every phase of one file against each other; one spec per distinct task.

    Never raises for what a phase holds: every problem becomes part of its spec's status.
    """
    phases = [_named(raw, index) for index, raw in enumerate(phases, 1)]
    rules = {id(raw): _parse(raw) for raw in phases}
    errors = {id(raw): list(raw.problems) for raw in phases}
    for raw in phases:
        rule, problem = rules[id(raw)]
        errors[id(raw)].extend(_value_problems(raw))
        errors[id(raw)].extend(_own_problems(raw, rule, problem))
    _check_parents(file_path, phases, errors)
    _check_cycles(file_path, phases, errors)
    counts = Counter(raw.task for raw in phases)
    specs: dict[str, PhaseSpec] = {}
    for raw in phases:
        if raw.task in specs:
            continue
        if counts[raw.task] > 1:
            errors[id(raw)].append(
                f"duplicate task: {shown(raw.task)} defined {counts[raw.task]} times"
            )
        rule = rules[id(raw)][0]
        specs[raw.task] = _spec(file_path, raw, rule, errors[id(raw)], _warnings(raw, rule))
    return list(specs.values())


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
    if _storable_name(raw.task) and raw.task.partition(":")[0]:
        return raw
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


def _parse(raw: RawPhase) -> tuple[Rule | None, str]:
    try:
        return parse_rule(raw.rule), ""
    except RuleError as exc:
        return None, exc.status


def _own_problems(raw: RawPhase, rule: Rule | None, problem: str) -> list[str]:
    if problem:
        return [problem]
    assert rule is not None
    scheduled = rule.cron is not None or rule.never_fires or rule.manual or bool(rule.files)
    if not raw.depends_on and not scheduled:
        return [NON_SCHEDULED]
    return []


def _check_parents(
    file_path: str, phases: Sequence[RawPhase], errors: dict[int, list[str]]
) -> None:
    index = graph.ParentIndex(_Node(file_path, raw.task, raw.depends_on) for raw in phases)
    for raw in phases:
        if raw.depends_on and not index.parents(file_path, raw.depends_on):
            errors[id(raw)].append(f"parent task not found: {raw.depends_on}")


def _check_cycles(file_path: str, phases: Sequence[RawPhase], errors: dict[int, list[str]]) -> None:
    dag = graph.build(_Node(file_path, raw.task, raw.depends_on) for raw in phases)
    by_task: dict[str, RawPhase] = {}
    for raw in phases:
        by_task.setdefault(raw.task, raw)  # a duplicated task reports on its first, kept, row
    for cycle in graph.cycles(dag):
        message = graph.describe_cycle(cycle)
        for _, task in cycle:
            if message not in errors[id(by_task[task])]:
                errors[id(by_task[task])].append(message)


def _warnings(raw: RawPhase, rule: Rule | None) -> list[str]:
    keys = raw.unknown_keys + (rule.unknown if rule else ())
    warnings = [f"unknown key: {shown(key)}" for key in keys]
    if rule is not None and rule.never_fires:
        warnings.append(f"cron never fires: {shown(rule.cron_text)}")
    elif rule is not None and rule.manual and rule.cron_text:
        warnings.append(f"cron ignored: manual phase has no schedule ({shown(rule.cron_text)})")
    tokens = templates.unknown_tokens(raw.template)
    warnings.extend(f"unknown template token: {shown(token)}" for token in tokens)
    return warnings


def _spec(
    file_path: str, raw: RawPhase, rule: Rule | None, errors: list[str], warnings: list[str]
) -> PhaseSpec:
    """The spec of ``raw``, every field storable: a bad value is an error in the status, and
    what is stored in its place only has to fit (the phase never runs)."""
    severity = Severity.ERROR if errors else Severity.WARNING if warnings else Severity.OK
    return PhaseSpec(
        file_path=file_path,
        task=raw.task,
        depends_on=raw.depends_on if _storable_name(raw.depends_on) else "",
        rule_text=_storable_text(raw.rule),
        template=_storable_text(raw.template),
        retry=raw.retry if 0 <= raw.retry <= MAX_RETRY else 0,
        rule=rule,
        status=_storable_status("; ".join(errors + warnings)),
        severity=severity,
    )


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
