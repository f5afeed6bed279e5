"""Validation: the status message of each phase, and whether it stops the phase (severity)."""

from __future__ import annotations

import pytest

from scheduler.loader import RawPhase
from scheduler.validation import NON_SCHEDULED, PhaseSpec, Severity, validate_file


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
    assert spec.status == "invalid rule value: files=/in/[ab (bad glob: malformed [ class)"
    assert spec.severity is Severity.ERROR
