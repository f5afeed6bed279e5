"""Rules: URL query strings parsed strictly (as Go's url.ParseQuery) into a typed Rule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from scheduler.errors import RuleError
from scheduler.retry import Backoff
from scheduler.rules import DEFAULT_RETRY_DELAY, BatchBy, Rule, parse_rule, query_pairs
from scheduler.timing import Catchup


def test_empty_rule_has_every_default() -> None:
    # given no rule text, when parsed, then every field has its documented default
    rule = parse_rule("")
    assert rule == Rule(text="")
    assert rule.cron is None
    assert rule.offset == timedelta(0)
    assert rule.retry_delay == DEFAULT_RETRY_DELAY == timedelta(seconds=1)
    assert rule.retry_backoff is Backoff.FIXED
    assert rule.catchup is Catchup.LATEST
    assert rule.batch_by is BatchBy.DAY
    assert not rule.is_batch
    assert rule.unknown == ()


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("offset=-4h", "offset", timedelta(hours=-4)),
        ("offset=90m", "offset", timedelta(minutes=90)),
        ("offset=-1d", "offset", timedelta(days=-1)),
        ("job=load", "job", "load"),
        ("job=a%20b", "job", "a b"),  # values are unescaped
        ("job=a+b", "job", "a b"),  # "+" is a space in a query string
        ("retry_delay=5m", "retry_delay", timedelta(minutes=5)),
        ("retry_delay=10ms", "retry_delay", timedelta(milliseconds=10)),
        ("retry_backoff=exponential", "retry_backoff", Backoff.EXPONENTIAL),
        ("retry_backoff=Exponential", "retry_backoff", Backoff.EXPONENTIAL),
        ("retry_backoff=fixed", "retry_backoff", Backoff.FIXED),
        ("retry_max_delay=1h", "retry_max_delay", timedelta(hours=1)),
        ("no_alert", "no_alert", True),
        ("no_alert=", "no_alert", True),
        ("no_alert=false", "no_alert", True),  # any value, as flowlord: the key's presence counts
        ("files=s3:/bucket/path/*/*.txt", "files", "s3:/bucket/path/*/*.txt"),
        ("files=gs://b/%2A.txt", "files", "gs://b/*.txt"),
        ("for=-48h", "batch_for", timedelta(hours=-48)),
        ("for=72h", "batch_for", timedelta(hours=72)),
        ("by=hour", "batch_by", BatchBy.HOUR),
        ("by=DAY", "batch_by", BatchBy.DAY),
        ("by=week", "batch_by", BatchBy.WEEK),
        ("by=month", "batch_by", BatchBy.MONTH),
        ("meta-file=test/presidents.json", "meta_file", "test/presidents.json"),
        ("tz=Europe/Berlin", "tz", "Europe/Berlin"),
        ("tz=UTC", "tz", "UTC"),
        ("timeout=1m", "timeout", timedelta(minutes=1)),
        ("concurrency=1", "concurrency", 1),
        ("concurrency=12", "concurrency", 12),
        ("catchup=latest", "catchup", Catchup.LATEST),
        ("catchup=all", "catchup", Catchup.ALL),
        ("catchup=None", "catchup", Catchup.NONE),
        ("job=a&job=b", "job", "a"),  # a repeated single-valued key: the first wins
    ],
)
def test_every_rule_key_is_read(text: str, field: str, expected: Any) -> None:
    # given a rule with one key, when parsed, then that field holds the typed value
    assert getattr(parse_rule(text), field) == expected


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("cron=0 5 * * *", "0 0 5 * * *"),
        ("cron=15 35 13 * * *", "15 35 13 * * *"),  # six fields: seconds first
        ("cron=20 */6 * * SUN", "0 20 */6 * * 0"),
        ("cron=0 0 * * ?", "0 0 0 * * *"),
        ("cron=@daily", "0 0 0 * * *"),
    ],
)
def test_cron_is_parsed_in_flowlords_dialect(text: str, fields: str) -> None:
    # given a cron rule, when parsed, then the schedule is the normalised six-field form
    rule = parse_rule(text)
    assert rule.cron is not None
    assert rule.cron.fields == fields


def test_every_descriptor_keeps_its_period() -> None:
    rule = parse_rule("cron=@every 90m")
    assert rule.cron is not None and rule.cron.every == timedelta(minutes=90)


def test_a_full_flowlord_rule() -> None:
    # given the rule of flowlord's TestToml task1, when parsed, then each part is read
    rule = parse_rule("cron=0 * * * *&offset=-4h&job=t2&retry_delay=10ms")
    assert rule.cron is not None and rule.cron.expr == "0 * * * *"
    assert (rule.offset, rule.job, rule.retry_delay) == (
        timedelta(hours=-4),
        "t2",
        timedelta(milliseconds=10),
    )


@pytest.mark.parametrize(
    "text",
    [
        'a;lskdfj?%$`?"^',
        "cron=0 5 * * *;offset=-4h",
        "job=a;b",
        "%notvalid=%%%",
        "job=100%",
        "job=%zz",
        "job=%4",
        "offset=-4h&job=%g1",
        "%=x",
    ],
)
def test_strict_query_parsing(text: str) -> None:
    # given a rule Go's ParseQuery rejects (";" or a bad "%" escape), then the whole rule is invalid
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    assert caught.value.status == f"invalid rule format: {text}"


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("", []),
        ("a=1&b=2", [("a", "1"), ("b", "2")]),
        ("a=1&&b", [("a", "1"), ("b", "")]),
        ("a=%41%2f", [("a", "A/")]),
        ("a=x=y", [("a", "x=y")]),
        ("k%20ey=v+w", [("k ey", "v w")]),
    ],
)
def test_query_pairs(text: str, pairs: list[tuple[str, str]]) -> None:
    assert query_pairs(text) == pairs


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("offset=xyz", "invalid duration: offset=xyz"),
        ("offset=4", "invalid duration: offset=4"),
        ("retry_delay=soon", "invalid duration: retry_delay=soon"),
        ("for=1week", "invalid duration: for=1week"),
        ("timeout=0s", "invalid duration: timeout=0s"),
        ("timeout=-1m", "invalid duration: timeout=-1m"),
        ("retry_max_delay=0", "invalid duration: retry_max_delay=0"),
        ("offset=99999999999999999999h", "invalid duration: offset=99999999999999999999h"),
    ],
)
def test_invalid_durations(text: str, status: str) -> None:
    # given a key whose value is no (usable) duration, then the status names key and value
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("cron=abcdefg", "invalid cron: abcdefg "),
        ("cron=badcron", "invalid cron: badcron "),
        ("cron=1 2 3 4", "invalid cron: 1 2 3 4 "),
        ("cron=1 2 3 4 5 6 7", "invalid cron: 1 2 3 4 5 6 7 "),
        ("cron=61 * * * *", "invalid cron: 61 * * * * "),
        ("cron=@sometimes", "invalid cron: @sometimes "),
        ("cron=@every", "invalid cron: @every "),
        ("cron=@every -5m", "invalid cron: @every -5m "),
        ("cron=@every 99999999999999999999h", "invalid cron: @every 99999999999999999999h "),
        ("cron=@every 500ms", "invalid cron: @every 500ms "),  # flowlord's floor is a second
        ("cron=@every 36526d", "invalid cron: @every 36526d "),
        # no int() of 5000 digits (Python refuses more than 4300)
        pytest.param(f"cron=0 {'9' * 5000} * * *", "invalid cron: 0 999", id="hour-5000-digits"),
        pytest.param(f"cron=*/{'9' * 5000} * * * *", "invalid cron: */999", id="step-5000-digits"),
    ],
)
def test_invalid_cron_status_names_the_expression(text: str, start: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    assert caught.value.status.startswith(start)
    assert len(caught.value.status) > len(start)  # followed by the reason


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("retry_backoff=linear", "invalid value: retry_backoff=linear"),
        ("by=year", "invalid value: by=year"),
        ("catchup=some", "invalid value: catchup=some"),
        ("tz=Mars/Base", "invalid value: tz=Mars/Base"),
        ("tz=", "invalid value: tz="),
        ("tz=America", "invalid value: tz=America"),  # a folder of the zone database
        pytest.param("tz=" + "a" * 300, "invalid value: tz=aaa", id="tz-too-long-for-a-file"),
        ("tz=../../etc/passwd", "invalid value: tz=../../etc/passwd"),
        ("concurrency=0", "invalid value: concurrency=0"),
        ("concurrency=-1", "invalid value: concurrency=-1"),
        ("concurrency=two", "invalid value: concurrency=two"),
        ("concurrency=1.5", "invalid value: concurrency=1.5"),
        ("concurrency=²", "invalid value: concurrency=²"),  # isdigit() but not a number
        ("files=/in/[abc", "invalid value: files=/in/[abc (bad glob: malformed [ class)"),
        ("files=/in/x\\", "invalid value: files=/in/x\\ (bad glob: trailing \\)"),
        # ranges: nothing a rule says may overflow a date, a step count or a column later
        ("offset=36526d", "invalid value: offset=36526d (want at most 36525d either way)"),
        ("offset=-36526d", "invalid value: offset=-36526d (want at most 36525d either way)"),
        ("retry_delay=-1s", "invalid value: retry_delay=-1s (want 0 or more)"),
        ("retry_delay=40000d", "invalid value: retry_delay=40000d"),
        ("retry_max_delay=40000d", "invalid value: retry_max_delay=40000d"),
        ("timeout=40000d", "invalid value: timeout=40000d"),
        ("for=-40000d", "invalid value: for=-40000d"),
        ("for=20000d&by=hour", "invalid value: for=20000d (more than 100000 tasks per fire)"),
        ("for=-3000d&meta=a:1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,"
         "26,27,28,29,30,31,32,33,34", "invalid value: for=-3000d (more than 100000 tasks"),
        pytest.param("meta=a:" + ",".join(["x"] * 100_001), "invalid value: meta=a:x,x,",
                     id="meta-100001-rows"),
        ("concurrency=1000001", "invalid value: concurrency=1000001 (want a whole number from 1"),
        pytest.param("concurrency=" + "9" * 5000, "invalid value: concurrency=999",
                     id="concurrency-5000-digits"),
        ("job=%00", "invalid value: job=\\0 (NUL byte)"),
        ("meta-file=rows%00.json", "invalid value: meta-file=rows\\0.json (NUL byte)"),
        ("cron=0 5 * * *&x%00=1", "invalid value: x\\0=1 (NUL byte)"),
    ],
)
def test_bad_values(text: str, start: str) -> None:
    # given a key with a value outside its set, then the status names key and value
    with pytest.raises(RuleError) as caught:
        parse_rule(text)
    assert caught.value.status.startswith(start)
    assert len(caught.value.status) < 200  # a long value is shown cut


def test_a_usable_glob_is_kept_as_written() -> None:
    assert parse_rule("files=gs://*/[a-z]*/*.csv").files == "gs://*/[a-z]*/*.csv"


def test_bad_enum_lists_the_choices() -> None:
    with pytest.raises(RuleError, match=r"want one of latest, all, none"):
        parse_rule("catchup=sometimes")


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ("meta=name:a,b,c|value:1,2,3", [
            {"name": "a", "value": "1"},
            {"name": "b", "value": "2"},
            {"name": "c", "value": "3"},
        ]),
        ("meta=key:value", [{"key": "value"}]),
        ("meta=name:a,b", [{"name": "a"}, {"name": "b"}]),
        ("meta=file:s3://b/f.txt|value:apple", [{"file": "s3://b/f.txt", "value": "apple"}]),
    ],
)
def test_meta_rows(text: str, rows: list[dict[str, str]]) -> None:
    # given a meta batch rule, when parsed, then there is one row per index and it is a batch
    rule = parse_rule(text)
    assert rule.meta_rows() == rows
    assert rule.is_batch


@pytest.mark.parametrize(
    "text",
    [
        "meta=name:a,b|value:1",
        "meta=name:alice,bob|age:25",
        "meta=a:1|b:1,2|c:1",
    ],
)
def test_meta_lists_must_match_in_length(text: str) -> None:
    with pytest.raises(RuleError, match=r"^invalid value: meta=.*differ in length"):
        parse_rule(text)


@pytest.mark.parametrize("text", ["meta=abc", "meta=:a,b", "meta=name:a|value"])
def test_meta_needs_name_and_values(text: str) -> None:
    with pytest.raises(RuleError, match=r"^invalid value: meta="):
        parse_rule(text)


@pytest.mark.parametrize(
    "text",
    [
        "cron=15 35 13 * * *&meta=name:a,b&meta-file=test.json",
        "meta-file=test.json&meta=name:a",
    ],
)
def test_meta_and_meta_file_together_is_an_error(text: str) -> None:
    with pytest.raises(RuleError, match=r"meta and meta-file"):
        parse_rule(text)


@pytest.mark.parametrize(
    ("text", "is_batch"),
    [
        ("cron=15 35 13 * * *&offset=-24h", False),
        ("cron=15 35 13 * * *&meta-file=test.json", True),
        ("cron=15 35 13 * * *&for=-48h&meta=name:a,b", True),
        ("cron=15 35 13 * * *&for=-48h&by=hour", True),
        ("cron=15 35 13 * * *&for=0s", True),
        ("by=hour", False),  # "by" alone batches nothing
    ],
)
def test_is_batch(text: str, is_batch: bool) -> None:
    # flowlord: a batch job iff for, meta-file or meta is given
    assert parse_rule(text).is_batch is is_batch


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("require={meta:file}", ("file",)),
        ("require={meta:file}&require={meta:time}", ("file", "time")),
        ("require={meta:file},{meta:time}", ("file", "time")),
        ("require={META:file}", ("file",)),
        ("require={meta:a}{meta:b}", ("a", "b")),
        ("require=file", ("file",)),
        ("require=", ()),
        ("require={meta:a},,{meta:b}", ("a", "b")),
    ],
)
def test_require_forms(text: str, keys: tuple[str, ...]) -> None:
    # given require repeated, comma-joined or as tokens, then every named meta key is listed
    assert parse_rule(text).require == keys


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        ("cron=0 5 * * *&Offset=-4h", ("Offset",)),  # rule keys are case-sensitive
        ("cron=0 5 * * *&colour=red&size=2", ("colour", "size")),
        ("retry=3", ("retry",)),
        ("cron=0 5 * * *&x=1&x=2", ("x",)),
    ],
)
def test_unknown_keys_are_listed_not_errors(text: str, unknown: tuple[str, ...]) -> None:
    # given keys the rule does not know, when parsed, then it parses and lists them in order
    rule = parse_rule(text)
    assert rule.unknown == unknown
    assert rule.cron is not None or "cron" not in text


def test_rule_keeps_its_text() -> None:
    text = "cron=0 5 * * *&offset=-24h&retry_delay=5m"
    assert parse_rule(text).text == text
