"""Raw phases → validated phase specs, each with the status message users see.

Checks, in the order their messages are listed in a status: the phase's own values, its rule
(format, cron, durations, values), that it is scheduled at all, that its parent exists in the same
file, that it is on no dependency cycle, and that its task is not defined twice. Errors stop a
phase from firing; warnings (unknown keys) do not. A status is "" when the phase is clean.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scheduler import graph
from scheduler.errors import RuleError
from scheduler.loader import RawPhase
from scheduler.rules import Rule, parse_rule

NON_SCHEDULED = "non-scheduled phase: use depends_on, cron or files"


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


def validate_file(file_path: str, phases: Sequence[RawPhase]) -> list[PhaseSpec]:
    """Validate every phase of one file against each other; one spec per distinct task."""
    rules = {id(raw): _parse(raw) for raw in phases}
    errors = {id(raw): list(raw.problems) for raw in phases}
    for raw in phases:
        rule, problem = rules[id(raw)]
        errors[id(raw)].extend(_own_problems(raw, rule, problem))
    _check_parents(file_path, phases, errors)
    _check_cycles(file_path, phases, errors)
    counts = Counter(raw.task for raw in phases)
    specs: dict[str, PhaseSpec] = {}
    for raw in phases:
        if raw.task in specs:
            continue
        if counts[raw.task] > 1:
            errors[id(raw)].append(f"duplicate task: {raw.task} defined {counts[raw.task]} times")
        rule = rules[id(raw)][0]
        specs[raw.task] = _spec(file_path, raw, rule, errors[id(raw)], _warnings(raw, rule))
    return list(specs.values())


def _parse(raw: RawPhase) -> tuple[Rule | None, str]:
    try:
        return parse_rule(raw.rule), ""
    except RuleError as exc:
        return None, exc.status


def _own_problems(raw: RawPhase, rule: Rule | None, problem: str) -> list[str]:
    if problem:
        return [problem]
    assert rule is not None
    if not raw.depends_on and rule.cron is None and not rule.files:
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
    keys = list(raw.unknown_keys) + list(rule.unknown if rule else ())
    return [f"unknown key: {key}" for key in keys]


def _spec(
    file_path: str, raw: RawPhase, rule: Rule | None, errors: list[str], warnings: list[str]
) -> PhaseSpec:
    severity = Severity.ERROR if errors else Severity.WARNING if warnings else Severity.OK
    return PhaseSpec(
        file_path=file_path,
        task=raw.task,
        depends_on=raw.depends_on,
        rule_text=raw.rule,
        template=raw.template,
        retry=raw.retry,
        rule=rule,
        status="; ".join(errors + warnings),
        severity=severity,
    )


@dataclass(frozen=True)
class _Node:
    file_path: str
    task: str
    depends_on: str
