"""Property tests: no input, however odd, crashes the loader; bad input becomes a status."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import RuleError
from scheduler.loader import RawPhase, parse_bytes, read_phase
from scheduler.rules import parse_rule
from scheduler.validation import Severity, validate_file

FAST = settings(max_examples=200, deadline=None)

# Text built from the characters rules are made of, so that examples reach past the format check.
RULE_ALPHABET = st.sampled_from(list("=&;%+*/?@:|,{}-. 0123456789abcdefghjmnorstuwyzACDFJLNSTUZ"))
RULE_KEYS = st.sampled_from(
    ["cron", "offset", "job", "retry_delay", "no_alert", "require", "files", "for", "by",
     "meta", "meta-file", "tz", "timeout", "retry_backoff", "retry_max_delay", "concurrency",
     "catchup", "x"]
)
RULE_VALUES = st.one_of(
    st.text(RULE_ALPHABET, max_size=20),
    st.sampled_from(["0 5 * * *", "@every 1h", "@every", "-4h", "1d", "99999999999999999999h",
                     "Europe/Berlin", "America", "all", "hour", "name:a,b|value:1", "{meta:x}",
                     "²", "%zz", ""]),
)
RULES = st.one_of(
    st.text(max_size=60),
    st.text(RULE_ALPHABET, max_size=60),
    st.lists(st.tuples(RULE_KEYS, RULE_VALUES), max_size=5).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
    ),
)


def test_every_run_explores_the_same_examples_and_keeps_none() -> None:
    # The profile tests/conftest.py loads: a saved failing example must never make later runs
    # fail, and CI must see what a laptop sees.
    current = settings()
    assert current.derandomize
    assert current.database is None
    assert current.print_blob


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_loader(data: bytes) -> None:
    load = parse_bytes("fuzz.toml", data)
    assert load.error or load.phases == () or all(isinstance(p, RawPhase) for p in load.phases)
    assert len(load.file_hash) == 32


TOML_VALUES = st.one_of(
    st.text(max_size=20), st.integers(), st.booleans(), st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
)
PHASE_KEYS = st.sampled_from(
    ["task", "Task", "rule", "dependsOn", "DependsOn", "depends_on", "retry", "template", "other"]
)


@FAST
@given(st.lists(st.dictionaries(PHASE_KEYS, TOML_VALUES, max_size=6), max_size=6))
def test_arbitrary_toml_phase_text_never_crashes(tables: list[dict[str, Any]]) -> None:
    import json

    lines = []
    for table in tables:
        lines.append("[[phase]]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
    load = parse_bytes("fuzz.toml", "\n".join(lines).encode())
    # duplicate spellings of one key can make TOML itself refuse the file: that is an error
    assert load.error or len(load.phases) == sum(1 for t in tables if t)


@FAST
@given(RULES)
def test_arbitrary_rules_raise_only_rule_error(text: str) -> None:
    try:
        parse_rule(text)
    except RuleError as exc:
        assert exc.status
        assert "\n" not in exc.status or "\n" in text


@FAST
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "task": st.sampled_from(["a", "b", "c", "t:x", "t:y", "t", ""]),
                "rule": RULES,
                "dependsOn": st.sampled_from(["", "a", "b", "c", "t", "t:x", "zz"]),
                "retry": st.one_of(st.integers(-2, 5), st.text(max_size=2)),
            },
            optional={"template": st.text(max_size=10), "extra": st.integers()},
        ),
        max_size=8,
    )
)
def test_arbitrary_phase_tables_validate_without_raising(tables: list[dict[str, Any]]) -> None:
    raws = [read_phase(table) for table in tables]
    specs = validate_file("fuzz.toml", raws)
    # one spec per distinct task; a phase without a usable task is one of its own ("phase N")
    named = {raw.task for raw in raws if raw.task.partition(":")[0]}
    assert len(specs) == len(named) + sum(1 for raw in raws if not raw.task.partition(":")[0])
    for spec in specs:
        assert (spec.severity is Severity.OK) is (spec.status == "")
        if spec.rule is None:
            assert spec.severity is Severity.ERROR
