"""What is due between two evaluations, under each catch-up policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from scheduler.cron import parse_cron
from scheduler.timing import Catchup, due_times, next_fire

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TZ_UTC = ZoneInfo("UTC")
LATEST, ALL, NONE = Catchup.LATEST, Catchup.ALL, Catchup.NONE


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def due(
    expr: str,
    last: str,
    now: str,
    catchup: Catchup,
    tz: ZoneInfo = TZ_UTC,
    cap: int = 1000,
) -> list[str]:
    times = due_times(parse_cron(expr), tz, utc(last), utc(now), catchup, cap=cap)
    return [f"{t:%Y-%m-%d %H:%M:%S}" for t in times]


@pytest.mark.parametrize(
    ("expr", "last", "now", "catchup", "expected"),
    [
        # nothing due
        ("0 5 * * *", "2024-01-01 05:00", "2024-01-01 06:00", LATEST, []),
        ("0 5 * * *", "2024-01-01 04:00", "2024-01-01 04:59:59", ALL, []),
        ("0 5 * * *", "2024-01-01 04:00", "2024-01-01 04:59:59", NONE, []),
        ("0 5 * * *", "2024-01-01 06:00", "2024-01-01 05:00", ALL, []),  # now before last
        # exactly one due and on time: every policy fires it
        ("0 5 * * *", "2024-01-01 04:59:59", "2024-01-01 05:00", LATEST, ["2024-01-01 05:00:00"]),
        ("0 5 * * *", "2024-01-01 04:59:59", "2024-01-01 05:00", ALL, ["2024-01-01 05:00:00"]),
        ("0 5 * * *", "2024-01-01 04:59:59", "2024-01-01 05:00", NONE, ["2024-01-01 05:00:00"]),
        ("0 5 * * *", "2024-01-01 04:59", "2024-01-01 05:01", NONE, ["2024-01-01 05:00:00"]),
        # the bounds: last_evaluated excluded, now included
        ("0 5 * * *", "2024-01-01 05:00", "2024-01-02 05:00", ALL, ["2024-01-02 05:00:00"]),
        # exactly one due but late: latest and all fire it, none drops it
        ("0 5 * * *", "2024-01-01 04:00", "2024-01-01 05:01:01", LATEST, ["2024-01-01 05:00:00"]),
        ("0 5 * * *", "2024-01-01 04:00", "2024-01-01 05:01:01", ALL, ["2024-01-01 05:00:00"]),
        ("0 5 * * *", "2024-01-01 04:00", "2024-01-01 05:01:01", NONE, []),
        # three missed days of a daily cron
        ("0 5 * * *", "2024-01-01 06:00", "2024-01-04 12:00", LATEST, ["2024-01-04 05:00:00"]),
        (
            "0 5 * * *",
            "2024-01-01 06:00",
            "2024-01-04 12:00",
            ALL,
            ["2024-01-02 05:00:00", "2024-01-03 05:00:00", "2024-01-04 05:00:00"],
        ),
        ("0 5 * * *", "2024-01-01 06:00", "2024-01-04 12:00", NONE, []),
        # ... and the scheduler came back just in time for the last one
        ("0 5 * * *", "2024-01-01 06:00", "2024-01-04 05:00:30", NONE, ["2024-01-04 05:00:00"]),
        # seconds and @every
        (
            "*/10 * * * * *",
            "2024-01-01 00:00:05",
            "2024-01-01 00:00:10",
            ALL,
            ["2024-01-01 00:00:10"],
        ),
        (
            "*/10 * * * * *",
            "2024-01-01 00:00:05",
            "2024-01-01 00:00:35",
            LATEST,
            ["2024-01-01 00:00:30"],
        ),
        (
            "@every 90m",
            "2024-01-01 00:00",
            "2024-01-01 05:00",
            ALL,
            ["2024-01-01 01:30:00", "2024-01-01 03:00:00", "2024-01-01 04:30:00"],
        ),
        ("@every 90m", "2024-01-01 00:00", "2024-01-01 05:00", LATEST, ["2024-01-01 04:30:00"]),
        ("@every 90m", "2024-01-01 00:00", "2024-01-01 05:00", NONE, []),
        ("@every 90m", "2024-01-01 00:00", "2024-01-01 04:30:45", NONE, ["2024-01-01 04:30:00"]),
        # a yearly cron after a long downtime
        ("@yearly", "2019-06-01 00:00", "2024-06-01 00:00", LATEST, ["2024-01-01 00:00:00"]),
    ],
)
def test_due_times(expr: str, last: str, now: str, catchup: Catchup, expected: list[str]) -> None:
    assert due(expr, last, now, catchup) == expected


@pytest.mark.parametrize(
    ("expr", "last", "now", "cap", "expected"),
    [
        (
            "0 * * * *",
            "2024-01-01 00:30",
            "2024-01-04 00:30",
            3,
            ["2024-01-03 22:00:00", "2024-01-03 23:00:00", "2024-01-04 00:00:00"],
        ),
        ("0 5 * * *", "2024-01-01 06:00", "2024-01-04 12:00", 1, ["2024-01-04 05:00:00"]),
        (
            "0 5 * * *",
            "2024-01-01 06:00",
            "2024-01-04 12:00",
            2,
            ["2024-01-03 05:00:00", "2024-01-04 05:00:00"],
        ),
        # the cap is larger than what was missed: everything, oldest first
        (
            "0 5 * * *",
            "2024-01-01 06:00",
            "2024-01-03 12:00",
            5,
            ["2024-01-02 05:00:00", "2024-01-03 05:00:00"],
        ),
    ],
)
def test_all_keeps_the_most_recent_cap_oldest_first(
    expr: str, last: str, now: str, cap: int, expected: list[str]
) -> None:
    assert due(expr, last, now, ALL, cap=cap) == expected


def test_all_after_three_days_of_a_minutely_cron_is_capped() -> None:
    times = due_times(
        parse_cron("* * * * *"), TZ_UTC, utc("2024-01-01 00:00"), utc("2024-01-04 00:00"), ALL
    )
    assert len(times) == 1000
    assert times[-1] == utc("2024-01-04 00:00")
    assert times[0] == utc("2024-01-04 00:00") - timedelta(minutes=999)
    assert all(b - a == timedelta(minutes=1) for a, b in pairwise(times))


@pytest.mark.parametrize(
    ("expr", "tz", "last", "now", "catchup", "expected"),
    [
        # spring forward: a daily 02:30 fires once, at the end of the gap
        (
            "30 2 * * *",
            BERLIN,
            "2024-03-30 12:00",
            "2024-03-31 12:00",
            ALL,
            ["2024-03-31 01:00:00"],
        ),
        (
            "30 2 * * *",
            NEW_YORK,
            "2024-03-09 12:00",
            "2024-03-10 12:00",
            ALL,
            ["2024-03-10 07:00:00"],
        ),
        # ... and on time when the engine ticks through the night
        (
            "30 2 * * *",
            BERLIN,
            "2024-03-31 00:59:59",
            "2024-03-31 01:00:00",
            NONE,
            ["2024-03-31 01:00:00"],
        ),
        # fall back: a daily 02:30 fires once, at the first 02:30
        (
            "30 2 * * *",
            BERLIN,
            "2024-10-26 12:00",
            "2024-10-27 12:00",
            ALL,
            ["2024-10-27 00:30:00"],
        ),
        ("30 2 * * *", BERLIN, "2024-10-27 01:29", "2024-10-27 01:31", ALL, []),
        (
            "30 1 * * *",
            NEW_YORK,
            "2024-11-02 12:00",
            "2024-11-03 12:00",
            ALL,
            ["2024-11-03 05:30:00"],
        ),
        # fall back: an hourly cron fires in both real hours
        (
            "30 * * * *",
            BERLIN,
            "2024-10-27 00:00",
            "2024-10-27 02:00",
            ALL,
            ["2024-10-27 00:30:00", "2024-10-27 01:30:00"],
        ),
        (
            "30 * * * *",
            BERLIN,
            "2024-10-27 01:29",
            "2024-10-27 01:31",
            NONE,
            ["2024-10-27 01:30:00"],
        ),
        (
            "0 * * * *",
            NEW_YORK,
            "2024-11-03 04:30",
            "2024-11-03 06:30",
            ALL,
            ["2024-11-03 05:00:00", "2024-11-03 06:00:00"],
        ),
        # spring forward: an hourly cron skips the missing hour
        (
            "30 * * * *",
            BERLIN,
            "2024-03-31 00:00",
            "2024-03-31 02:00",
            ALL,
            ["2024-03-31 00:30:00", "2024-03-31 01:30:00"],
        ),
        (
            "30 * * * *",
            BERLIN,
            "2024-03-31 00:00",
            "2024-03-31 02:00",
            LATEST,
            ["2024-03-31 01:30:00"],
        ),
    ],
)
def test_due_times_across_dst(
    expr: str, tz: ZoneInfo, last: str, now: str, catchup: Catchup, expected: list[str]
) -> None:
    assert due(expr, last, now, catchup, tz=tz) == expected


def test_grace_is_a_parameter() -> None:
    schedule = parse_cron("0 5 * * *")
    last, now = utc("2024-01-01 04:00"), utc("2024-01-01 05:10")
    assert due_times(schedule, TZ_UTC, last, now, NONE) == []
    assert due_times(schedule, TZ_UTC, last, now, NONE, grace=timedelta(minutes=10)) == [
        utc("2024-01-01 05:00")
    ]


def test_policies_come_from_rule_text() -> None:
    assert [Catchup(v) for v in ("latest", "all", "none")] == [LATEST, ALL, NONE]
    assert f"{Catchup.ALL}" == "all"  # StrEnum: renders as its value in SQL and messages


@pytest.mark.parametrize(
    ("last", "now", "cap"),
    [
        (utc("2024-01-01 00:00"), utc("2024-01-02 00:00"), 0),
        (utc("2024-01-01 00:00"), datetime(2024, 1, 2), 1000),
        (datetime(2024, 1, 1), utc("2024-01-02 00:00"), 1000),
    ],
)
def test_bad_arguments_are_rejected(last: datetime, now: datetime, cap: int) -> None:
    with pytest.raises(ValueError):
        due_times(parse_cron("0 5 * * *"), TZ_UTC, last, now, ALL, cap=cap)


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        ("0 5 * * *", TZ_UTC, "2024-01-01 05:00", "2024-01-02 05:00"),
        ("0 5 * * *", BERLIN, "2024-07-01 00:00", "2024-07-01 03:00"),
        ("30 2 * * *", BERLIN, "2024-03-31 00:00", "2024-03-31 01:00"),
        ("@every 90m", NEW_YORK, "2024-01-01 01:30", "2024-01-01 03:00"),
    ],
)
def test_next_fire(expr: str, tz: ZoneInfo, after: str, expected: str) -> None:
    assert next_fire(parse_cron(expr), tz, utc(after)) == utc(expected)
