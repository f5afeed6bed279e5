"""Validation: the status message of each phase, and whether it stops the phase (severity)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import graph
from scheduler.config import WorkerConfig
from scheduler.loader import RawPhase
from scheduler.validation import (
    NO_COMMAND,
    NON_SCHEDULED,
    PhaseSpec,
    Severity,
    require_command,
    validate_file,
    validate_rows,
)


class Node(NamedTuple):
    """What graph.build reads of a phase."""

    file_path: str
    task: str
    depends_on: str


def one(raw: RawPhase) -> PhaseSpec:
    (spec,) = validate_file("f.toml", [raw])
    return spec


def by_task(*phases: RawPhase) -> dict[str, PhaseSpec]:
    return {spec.task: spec for spec in validate_file("f.toml", phases)}


@pytest.mark.parametrize(
    ("rule", "status"),
    [
        ("files=s3:/bucket/path/*/*.txt", ""),
        ("", NON_SCHEDULED),
        ("retry_delay=5m", NON_SCHEDULED),
        ("cron=abcdefg", "invalid cron: abcdefg "),
        ("cron=1 2 3 4 5", ""),
        ("cron=1 2 3 4 5 6", ""),
        ("cron=20 */6 * * SUN", ""),
        ("cron=0 0 1 * * *&offset=-6h", ""),
        ("cron=@every 90m", ""),
        ('a;lskdfj?%$`?"^', 'invalid rule format: a;lskdfj?%$`?"^'),
        ("cron=0 5 * * *&offset=xyz", "invalid duration: offset=xyz"),
    ],
)
def test_flowlord_validation_table(rule: str, status: str) -> None:
    # given a phase with no depends_on and this rule, when validated, then its status starts so
    spec = one(RawPhase(task="t", rule=rule))
    assert spec.status.startswith(status)
    assert (spec.status == "") is (status == "")
    assert spec.severity is (Severity.OK if status == "" else Severity.ERROR)


def test_non_scheduled_message_is_exact() -> None:
    assert one(RawPhase(task="t")).status == "non-scheduled phase: use depends_on, cron or files"


def test_spec_carries_the_phase() -> None:
    raw = RawPhase(task="t:j", rule="cron=@daily", retry=2, template="echo {yyyy}")
    spec = one(raw)
    assert (spec.file_path, spec.task, spec.topic, spec.job) == ("f.toml", "t:j", "t", "j")
    assert (spec.rule_text, spec.retry, spec.template) == ("cron=@daily", 2, "echo {yyyy}")
    assert spec.rule is not None and spec.rule.cron is not None
    assert spec.runnable


def test_unparseable_rule_leaves_no_rule_and_is_not_runnable() -> None:
    spec = one(RawPhase(task="t", rule="a;b"))
    assert spec.rule is None
    assert not spec.runnable


@pytest.mark.parametrize(
    ("depends_on", "found"),
    [
        ("parent", True),  # by topic: any job of it
        ("parent:daily", True),
        ("parent:weekly", False),  # that job does not exist
        ("other", False),
        ("paren", False),
    ],
)
def test_parent_must_exist_in_the_same_file(depends_on: str, found: bool) -> None:
    specs = by_task(
        RawPhase(task="parent:daily", rule="cron=@daily"),
        RawPhase(task="child", depends_on=depends_on),
    )
    expected = "" if found else f"parent task not found: {depends_on}"
    assert specs["child"].status == expected
    assert specs["parent:daily"].status == ""


def test_parent_in_another_file_is_not_found() -> None:
    # parents resolve within the file: a phase elsewhere does not count
    (first,) = validate_file("a.toml", [RawPhase(task="extract", rule="cron=@daily")])
    (second,) = validate_file("b.toml", [RawPhase(task="load", depends_on="extract")])
    assert first.status == ""
    assert second.status == "parent task not found: extract"
    assert second.severity is Severity.ERROR


def test_parent_by_topic_does_not_match_a_plain_task_for_topic_job() -> None:
    # depends_on "t:j" needs exactly t:j; a phase "t" (no job) is not it
    specs = by_task(RawPhase(task="t", rule="cron=@daily"), RawPhase(task="c", depends_on="t:j"))
    assert specs["c"].status == "parent task not found: t:j"


def test_two_phase_cycle_is_named_on_both() -> None:
    specs = by_task(RawPhase(task="a", depends_on="b"), RawPhase(task="b", depends_on="a"))
    assert specs["a"].status == "dependency cycle: a -> b -> a"
    assert specs["b"].status == "dependency cycle: a -> b -> a"
    assert not specs["a"].runnable and not specs["b"].runnable


def test_three_phase_cycle_off_a_good_root() -> None:
    specs = by_task(
        RawPhase(task="root", rule="cron=@daily"),
        RawPhase(task="x", depends_on="z"),
        RawPhase(task="y", depends_on="x"),
        RawPhase(task="z", depends_on="y"),
    )
    assert specs["root"].status == ""
    for task in "xyz":
        assert specs[task].status == "dependency cycle: x -> y -> z -> x"


def test_self_cycle() -> None:
    assert one(RawPhase(task="a", depends_on="a")).status == "dependency cycle: a -> a"


def test_several_cycles_are_named_in_the_same_order_in_every_process() -> None:
    # given a file with several cycles through the same phases, when it is validated in
    # processes whose string hashing differs (networkx finds cycles in hash order), then every
    # process writes the same status, its cycles in order of their tasks
    script = textwrap.dedent(
        """
        from scheduler.loader import RawPhase
        from scheduler.validation import validate_file
        phases = [RawPhase(task="a", depends_on="b"), RawPhase(task="b", depends_on="c"),
                  RawPhase(task="c", depends_on="a"), RawPhase(task="b:x", depends_on="a"),
                  RawPhase(task="c:y", depends_on="b")]
        print(validate_file("f.toml", phases)[0].status)
        """
    )
    statuses = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "4", "6")  # seeds whose hashing found a's cycles in three orders
    }
    assert statuses == {
        "dependency cycle: a -> b:x -> a; dependency cycle: a -> b:x -> c:y -> b -> a; "
        "dependency cycle: a -> c -> b -> a"
    }


TASKS = st.sampled_from(["a", "b", "c", "a:x", "a:y", "b:x", "c:z"])
PHASES = st.lists(
    st.builds(
        RawPhase,
        task=TASKS,
        depends_on=st.one_of(st.just(""), TASKS, st.sampled_from(["a:", "d", "b:y"])),
        rule=st.sampled_from(["", "cron=0 5 * * *", "cron=nope", "zz=1", "manual&cron=@daily"]),
        template=st.sampled_from(["", "echo {yyyy}", "echo {nope}"]),
    ),
    max_size=8,
)


@settings(max_examples=300)
@given(PHASES)
def test_a_cycle_is_reported_exactly_when_the_graph_has_one(phases: list[RawPhase]) -> None:
    # the cycle check reads the file's own parent index (networkx only names a cycle found):
    # it must agree with networkx on the same phases, duplicates and jobs included
    specs = validate_file("f.toml", phases)
    dag = graph.build(Node("f.toml", raw.task, raw.depends_on) for raw in phases)
    on_cycles = {task for cycle in graph.cycles(dag) for _, task in cycle}
    assert {s.task for s in specs if "dependency cycle" in s.status} == on_cycles


@settings(max_examples=300)
@given(PHASES)
def test_rows_are_the_specs_as_stored(phases: list[RawPhase]) -> None:
    # the catalog stores validate_rows without building specs: the same values, in
    # workflow_phases' column order
    assert validate_rows("f.toml", phases) == [
        (s.file_path, s.task, s.depends_on, s.rule_text, s.template, s.retry, s.status,
         s.severity.value)
        for s in validate_file("f.toml", phases)
    ]  # fmt: skip


def test_self_cycle_by_topic() -> None:
    # "t:b" depends on topic "t", which includes itself
    specs = by_task(RawPhase(task="t:a", rule="cron=@daily"), RawPhase(task="t:b", depends_on="t"))
    assert specs["t:b"].status == "dependency cycle: t:b -> t:b"
    assert specs["t:a"].status == ""


def test_duplicate_task_keeps_the_first_and_is_an_error() -> None:
    specs = validate_file(
        "f.toml",
        [
            RawPhase(task="dup", rule="cron=@daily", template="first"),
            RawPhase(task="dup", rule="cron=@hourly", template="second"),
        ],
    )
    assert len(specs) == 1
    assert specs[0].template == "first"
    assert specs[0].status == "duplicate task: dup defined 2 times"
    assert specs[0].severity is Severity.ERROR


def test_same_topic_different_jobs_are_not_duplicates() -> None:
    specs = by_task(
        RawPhase(task="t2:j1", rule="cron=@daily&job=j1"),
        RawPhase(task="t2:j2", rule="cron=@daily&job=j2"),
    )
    assert [s.status for s in specs.values()] == ["", ""]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (RawPhase(task="t", rule="cron=@daily", unknown_keys=("owner",)), "unknown key: owner"),
        (RawPhase(task="t", rule="cron=@daily&colour=red"), "unknown key: colour"),
        (
            RawPhase(task="t", rule="cron=@daily&x=1", unknown_keys=("Owner",)),
            "unknown key: Owner; unknown key: x",
        ),
    ],
)
def test_unknown_keys_are_warnings(raw: RawPhase, status: str) -> None:
    # given unknown keys, then they are reported but the phase still runs
    spec = one(raw)
    assert spec.status == status
    assert spec.severity is Severity.WARNING
    assert spec.runnable


def test_errors_come_before_warnings_and_severity_is_error() -> None:
    spec = one(RawPhase(task="t", rule="colour=red", unknown_keys=("owner",)))
    assert spec.status == f"{NON_SCHEDULED}; unknown key: owner; unknown key: colour"
    assert spec.severity is Severity.ERROR


def test_loader_problems_are_errors() -> None:
    raw = RawPhase(task="t", rule="cron=@daily", problems=("invalid value: retry='3' (want x)",))
    spec = one(raw)
    assert spec.status == "invalid value: retry='3' (want x)"
    assert spec.severity is Severity.ERROR


def test_phase_with_both_cron_and_depends_on_is_fine() -> None:
    specs = by_task(
        RawPhase(task="a", rule="cron=@daily"),
        RawPhase(task="b", rule="cron=@hourly", depends_on="a"),
    )
    assert specs["b"].status == ""


def test_empty_file_gives_no_specs() -> None:
    assert validate_file("f.toml", []) == []


def test_a_malformed_files_glob_is_an_error_even_beside_a_cron() -> None:
    # given a glob that could never match, then the phase says so instead of silently never firing
    spec = one(RawPhase(task="t", rule="cron=0 5 * * *&files=/in/[ab"))
    assert spec.status == "invalid value: files=/in/[ab (bad glob: malformed [ class)"
    assert spec.severity is Severity.ERROR


# --- every value range-checked: nothing reaches the store that it cannot hold ----------------

HUGE = 9223372036854775808  # one past the largest 64-bit integer


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (RawPhase(task="t", rule="cron=@daily", retry=HUGE),
         f"invalid value: retry={HUGE} (want 0 to 2147483646)"),
        (RawPhase(task="t", rule="cron=@daily", retry=2**31 - 1),
         "invalid value: retry=2147483647 (want 0 to 2147483646)"),
        (RawPhase(task="t", rule="cron=@daily", template="echo \0"),
         "invalid value: template=echo \\0 (NUL byte)"),
        pytest.param(RawPhase(task="t", rule="cron=@daily", depends_on="p" * 513),
                     f"invalid value: depends_on={'p' * 100}… (longer than 512 bytes)",
                     id="long-depends_on"),
        (RawPhase(task="t", rule="cron=@daily&job=%00"),
         "invalid value: job=\\0 (NUL byte)"),
    ],
)  # fmt: skip
def test_a_value_out_of_range_is_an_invalid_value(raw: RawPhase, status: str) -> None:
    spec = one(raw)
    assert spec.status.startswith(status)
    assert spec.severity is Severity.ERROR


def test_an_out_of_range_retry_is_stored_as_zero() -> None:
    assert one(RawPhase(task="t", rule="cron=@daily", retry=HUGE)).retry == 0


def test_the_largest_retry_the_database_holds_is_fine() -> None:
    assert one(RawPhase(task="t", rule="cron=@daily", retry=2**31 - 2)).status == ""


@pytest.mark.parametrize(
    ("task", "reason"),
    [pytest.param("t" * 513, "longer than 512 bytes", id="513-chars"),
     pytest.param("é" * 257, "longer than 512 bytes", id="514-bytes"),
     pytest.param("a\0b", "NUL byte", id="nul")],
)  # fmt: skip
def test_a_task_that_cannot_be_a_key_is_named_by_its_position(task: str, reason: str) -> None:
    specs = validate_file(
        "w.toml",
        [RawPhase(task="ok", rule="cron=@daily"), RawPhase(task=task, rule="cron=@daily")],
    )
    assert [s.task for s in specs] == ["ok", "phase 2"]
    assert specs[1].status.startswith("invalid value: task=") and reason in specs[1].status


def test_a_phase_without_task_is_named_by_its_file_and_position() -> None:
    # given three phases of which the third has no task, when validated, then it is "phase 3"
    specs = validate_file(
        "w.toml",
        [
            RawPhase(task="a", rule="cron=@daily"),
            RawPhase(task="b", depends_on="a"),
            RawPhase(problems=("missing key: task",), rule="cron=@daily", position=3),
        ],
    )
    missing = specs[-1]
    assert (missing.file_path, missing.task, missing.status) == (
        "w.toml", "phase 3", "missing key: task",
    )  # fmt: skip
    assert missing.severity is Severity.ERROR


def test_two_phases_without_task_are_two_errors_not_a_duplicate() -> None:
    specs = validate_file(
        "w.toml",
        [RawPhase(problems=("missing key: task",), position=n) for n in (1, 2)],
    )
    assert [s.task for s in specs] == ["phase 1", "phase 2"]
    assert all("duplicate" not in s.status for s in specs)


def test_every_stored_field_is_storable_whatever_the_phase_held() -> None:
    spec = one(RawPhase(task="t", rule="cron=\0&x=%00", template="a\0b", depends_on="d\0"))
    stored = [spec.task, spec.depends_on, spec.rule_text, spec.template, spec.status]
    assert not any("\0" in text for text in stored)
    assert spec.severity is Severity.ERROR


def test_a_status_is_cut_to_what_an_index_entry_holds() -> None:
    keys = tuple(f"k{i}" * 30 for i in range(99))
    raw = RawPhase(task="t", rule="cron=@daily", unknown_keys=keys)
    status = one(raw).status
    assert len(status.encode()) <= 2000
    assert status.startswith("unknown key: k0k0") and status.endswith("…")


# --- phases that never fire on a clock: manual ones, and crons that match no time ------------


@pytest.mark.parametrize("rule", ["manual=1", "manual=", "manual=yes&retry_delay=5m"])
def test_a_manual_phase_is_valid_without_cron_depends_on_or_files(rule: str) -> None:
    spec = one(RawPhase(task="t", rule=rule, template="echo"))
    assert (spec.status, spec.runnable) == ("", True)
    assert spec.rule is not None and spec.rule.manual and spec.rule.cron is None


def test_a_cron_beside_manual_is_ignored_with_a_warning() -> None:
    spec = one(RawPhase(task="t", rule="manual=1&cron=0 5 * * *", template="echo"))
    assert spec.rule is not None and spec.rule.cron is None  # the planner never fires it
    assert spec.status == "cron ignored: manual phase has no schedule (0 5 * * *)"
    assert spec.severity is Severity.WARNING


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 ?"])
def test_a_cron_that_never_fires_is_a_warning(cron: str) -> None:
    spec = one(RawPhase(task="t", rule=f"cron={cron}", template="echo"))
    assert spec.status == f"cron never fires: {cron}"
    assert spec.severity is Severity.WARNING
    assert spec.rule is not None and spec.rule.cron is None and spec.rule.never_fires


@pytest.mark.parametrize(
    ("template", "status"),
    [
        ("cmd {nope}", "unknown template token: {nope}"),
        ("cmd {yyyy-{x}", "unknown template token: {yyyy-{x}"),
        ("cmd {info} {Min}", "unknown template token: {info}; unknown template token: {Min}"),
        ("cmd {meta:}", "unknown template token: {meta:}"),
        ("cmd {yyyy}{MM}{dd} {meta:file} {TS} {host} #{later}", ""),
        ("""python3 -c "print({'a': 1})" ${HOME}""", ""),  # Python and the shell's braces
    ],
)
def test_an_unknown_template_token_is_a_warning(template: str, status: str) -> None:
    spec = one(RawPhase(task="t", rule="cron=@daily", template=template))
    assert spec.status == status
    assert spec.runnable


# --- a phase that cannot run: no template and no worker command -----------------------------


def test_require_command_is_an_error_without_template_or_worker() -> None:
    spec = one(RawPhase(task="t:j", rule="cron=@daily&colour=red"))
    checked = require_command(spec, {})
    assert checked.status == f"{NO_COMMAND}; unknown key: colour"
    assert checked.severity is Severity.ERROR and not checked.runnable


@pytest.mark.parametrize(
    "workers",
    [
        {"t": WorkerConfig(command="run {info}")},
        {"t:j": WorkerConfig(command="run {info}")},
        {"t": WorkerConfig(python="pkg.mod:fn")},
    ],
)
def test_a_worker_command_is_a_command(workers: dict[str, WorkerConfig]) -> None:
    spec = one(RawPhase(task="t:j", rule="cron=@daily"))
    assert require_command(spec, workers) == spec


def test_a_worker_without_command_does_not_count() -> None:
    spec = one(RawPhase(task="t", rule="cron=@daily"))
    assert require_command(spec, {"t": WorkerConfig(timeout=None)}).status == NO_COMMAND


def test_a_template_is_a_command() -> None:
    spec = one(RawPhase(task="t", rule="cron=@daily", template="echo"))
    assert require_command(spec, {}) == spec
