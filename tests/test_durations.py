"""Durations: Go's ``time.ParseDuration`` syntax, plus ``d`` for days."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.durations import format_duration, parse_duration
from scheduler.errors import DurationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", timedelta(0)),
        ("-0", timedelta(0)),
        ("+0", timedelta(0)),
        ("0s", timedelta(0)),
        ("5s", timedelta(seconds=5)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h30m15s", timedelta(hours=1, minutes=30, seconds=15)),
        ("-4h", timedelta(hours=-4)),
        ("-24h", timedelta(hours=-24)),
        ("+4h", timedelta(hours=4)),
        ("-1h30m", -timedelta(hours=1, minutes=30)),  # the sign applies to the whole duration
        ("250ms", timedelta(milliseconds=250)),
        ("10us", timedelta(microseconds=10)),
        ("10µs", timedelta(microseconds=10)),  # micro sign U+00B5
        ("10μs", timedelta(microseconds=10)),  # Greek mu U+03BC
        ("1000ns", timedelta(microseconds=1)),
        ("1.5h", timedelta(minutes=90)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2.25m", timedelta(seconds=135)),
        ("1d", timedelta(days=1)),
        ("90d", timedelta(days=90)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("-1d", timedelta(days=-1)),
        ("1h1h", timedelta(hours=2)),  # Go adds repeated units
        ("1m1h", timedelta(minutes=61)),  # and does not require an order
    ],
)
def test_parse_duration_accepts_go_syntax(text: str, expected: timedelta) -> None:
    # given a Go duration string, when parsed, then it is that timedelta
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-",
        "+",
        "h",
        "5",  # a number needs a unit (only a bare "0" is allowed)
        "1.5",
        ".",
        ".s",
        "1H",  # units are lower case
        "1 h",
        "1h 30m",
        "5sec",
        "1w",
        "1y",
        "--1h",
        "1e3s",
        "abc",
        "inf",
        "nans",
        "\u0661h",  # an Arabic-Indic digit one: Go takes ASCII digits only
        "99999999999999999999h",  # beyond what a timedelta holds
    ],
)
def test_parse_duration_rejects_invalid(text: str) -> None:
    # given a string that is not a Go duration, when parsed, then DurationError names it
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert caught.value.value == text


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(hours=-4), "-4h"),
        (timedelta(days=1), "24h"),
    ],
)
def test_format_duration_is_short_go_form(delta: timedelta, expected: str) -> None:
    # given a timedelta, when formatted, then it reads as Go prints it and parses back
    assert format_duration(delta) == expected
    assert parse_duration(expected) == delta
