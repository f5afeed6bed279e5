"""Cron dialect parsing and next fire times, including the DST policy."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.cron import CronSchedule, parse_cron
from scheduler.errors import CronError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TZ_UTC = ZoneInfo("UTC")


def utc(text: str) -> datetime:
    """'2024-03-31 01:00' or '2024-03-31 01:00:05' as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, tz: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    schedule = parse_cron(expr)
    times = []
    for _ in range(count):
        after = schedule.next_after(after, tz)
        times.append(after)
    return times


# --- UTC basics, seconds, names, descriptors ---------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 5 * * *", "2024-01-01 04:59", "2024-01-01 05:00"),
        ("0 5 * * *", "2024-01-01 05:00", "2024-01-02 05:00"),  # strictly after
        ("0 5 * * *", "2024-01-01 04:59:59.999999", "2024-01-01 05:00"),
        ("*/15 * * * *", "2024-01-01 10:07", "2024-01-01 10:15"),
        ("5/15 * * * *", "2024-01-01 10:21", "2024-01-01 10:35"),
        ("0 9-17/4 * * *", "2024-01-01 09:00", "2024-01-01 13:00"),
        ("0,30 8 * * *", "2024-01-01 08:10", "2024-01-01 08:30"),
        ("0 0 1 * *", "2024-01-15 00:00", "2024-02-01 00:00"),
        ("0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00"),
        ("0 0 1 * MON", "2024-01-02 00:00", "2024-01-08 00:00"),  # dom or dow
        ("0 0 * * 7", "2024-01-01 00:00", "2024-01-07 00:00"),  # 7 is Sunday
        ("0 0 29 2 *", "2097-03-01 00:00", "2104-02-29 00:00"),  # 2100 is no leap year
        ("0 0 13 * 5", "2024-09-01 00:00", "2024-09-06 00:00"),  # the 13th or a Friday
        ("0 0 1-31 * 1", "2024-01-01 00:00", "2024-01-02 00:00"),  # 1-31 restricts: either
        ("0 0 * 1-12 1", "2024-01-01 00:00", "2024-01-08 00:00"),  # every month: Mondays only
        ("0 0 29 2 1", "2024-03-01 00:00", "2025-02-03 00:00"),  # a Monday in February first
        # six fields: seconds first
        ("30 * * * * *", "2024-01-01 10:00:00", "2024-01-01 10:00:30"),
        ("*/10 * * * * *", "2024-01-01 10:00:55", "2024-01-01 10:01:00"),
        ("15 0 5 * * *", "2024-01-01 05:00:14", "2024-01-01 05:00:15"),
        ("0 0 5 * * *", "2024-01-01 05:00:00", "2024-01-02 05:00:00"),
        ("30 59 23 31 12 *", "2024-12-31 23:59:30", "2025-12-31 23:59:30"),
        # names in any case, ?
        ("0 0 1 JAN *", "2024-02-01 00:00", "2025-01-01 00:00"),
        ("0 0 1 jun-Aug *", "2024-07-02 00:00", "2024-08-01 00:00"),
        ("0 12 * * MON-FRI", "2024-01-05 12:00", "2024-01-08 12:00"),  # Fri -> Mon
        ("0 12 * * sat,SUN", "2024-01-01 00:00", "2024-01-06 12:00"),
        ("0 12 ? * wed", "2024-01-01 00:00", "2024-01-03 12:00"),
        ("0 12 15 * ?", "2024-01-01 00:00", "2024-01-15 12:00"),
        # descriptors
        ("@yearly", "2024-06-01 00:00", "2025-01-01 00:00"),
        ("@annually", "2024-06-01 00:00", "2025-01-01 00:00"),
        ("@monthly", "2024-06-01 00:00", "2024-07-01 00:00"),
        ("@weekly", "2024-01-01 00:00", "2024-01-07 00:00"),
        ("@daily", "2024-01-01 00:00", "2024-01-02 00:00"),
        ("@midnight", "2024-01-01 13:00", "2024-01-02 00:00"),
        ("@hourly", "2024-01-01 13:00", "2024-01-01 14:00"),
        ("@DAILY", "2024-01-01 00:00", "2024-01-02 00:00"),
    ],
)
def test_next_after_in_utc(expr: str, after: str, expected: str) -> None:
    assert parse_cron(expr).next_after(utc(after), TZ_UTC) == utc(expected)


def test_result_is_aware_utc_whatever_the_input_zone() -> None:
    after = datetime(2024, 1, 1, 12, 0, tzinfo=BERLIN)
    result = parse_cron("0 13 * * *").next_after(after, BERLIN)
    assert result.tzinfo is UTC
    assert result == utc("2024-01-01 12:00")


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        ("2024-01-01 00:00", "2024-01-01 01:30"),  # multiples of 90m from the epoch
        ("2024-01-01 01:29:59", "2024-01-01 01:30"),
        ("2024-01-01 01:30", "2024-01-01 03:00"),  # strictly after
        ("2024-01-01 23:59", "2024-01-02 00:00"),  # 1970-01-01 + 19724 * 16 * 90m
        ("1969-12-31 23:00", "1970-01-01 00:00"),
    ],
)
def test_every_fires_at_multiples_from_the_epoch(after: str, expected: str) -> None:
    schedule = parse_cron("@every 90m")
    assert schedule.next_after(utc(after), TZ_UTC) == utc(expected)
    # @every ignores the zone: wall clocks do not matter to it
    assert schedule.next_after(utc(after), BERLIN) == utc(expected)


@pytest.mark.parametrize(
    ("expr", "daily_style"),
    [
        ("30 2 * * *", True),
        ("0 8-18 * * *", True),
        ("* 2 * * *", True),
        ("@daily", True),
        ("30 * * * *", False),
        ("0 */2 * * *", False),
        ("0 ? * * *", False),
        ("*/5 * * * * *", False),
        ("@hourly", False),
        ("@every 1h", False),
    ],
)
def test_daily_style_follows_the_hour_field(expr: str, daily_style: bool) -> None:
    assert parse_cron(expr).daily_style is daily_style


def test_schedule_is_a_frozen_value() -> None:
    schedule = parse_cron("0 5 * * *")
    assert schedule == CronSchedule("0 5 * * *", "0 0 5 * * *", daily_style=True)
    assert {schedule: 1}[CronSchedule("0 5 * * *", "0 0 5 * * *", daily_style=True)] == 1
    with pytest.raises(AttributeError):
        schedule.expr = "x"  # type: ignore[misc]


def test_naive_after_is_rejected() -> None:
    with pytest.raises(ValueError, match="naive"):
        parse_cron("0 5 * * *").next_after(datetime(2024, 1, 1), TZ_UTC)


# --- invalid input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("abcdefg", "expected 5 or 6 fields, got 1"),
        ("", "expected 5 or 6 fields, got 0"),
        ("* * * *", "expected 5 or 6 fields, got 4"),
        ("* * * * * * *", "expected 5 or 6 fields, got 7"),
        ("60 * * * *", "minute: 60 out of range 0-59"),
        ("0 24 * * *", "hour: 24 out of range 0-23"),
        ("0 0 0 * *", "day of month: 0 out of range 1-31"),
        ("0 0 32 * *", "day of month: 32 out of range 1-31"),
        ("0 0 * 13 *", "month: 13 out of range 1-12"),
        ("0 0 * * 8", "day of week: 8 out of range 0-7"),
        ("60 0 0 * * *", "second: 60 out of range 0-59"),
        ("0 0 * FOO *", "month: bad value FOO"),
        ("0 0 * * MONDAY", "day of week: bad value MONDAY"),
        ("0 0 * * JAN", "day of week: bad value JAN"),
        ("0 0 * MON *", "month: bad value MON"),
        ("JAN 0 * * *", "minute: bad value JAN"),
        ("0 0 L * *", "day of month: bad value L"),
        ("0 0 * * 5#2", "day of week: bad value 5#2"),
        ("0 0 1,,2 * *", "day of month: bad value "),
        ("-5 * * * *", "minute: bad value -5"),
        ("5-1 * * * *", "minute: range 5-1 is reversed"),
        ("*/0 * * * *", "minute: bad step 0"),
        ("*/x * * * *", "minute: bad step x"),
        ("0 0 30 2 *", "never fires"),
        ("@often", "unknown descriptor @often"),
        ("@daily 5", "unknown descriptor @daily 5"),
        ("@every", "@every needs a duration"),
        ("@every -5m", "duration must be positive, got -5m"),
        ("@every 0s", "duration must be positive, got 0s"),
        ("@every xyz", "bad duration xyz"),
    ],
)
def test_invalid_expressions_name_the_reason(expr: str, reason: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(expr)
    assert caught.value.expr == expr
    assert caught.value.reason == reason
    assert str(caught.value) == f"invalid cron: {expr} {reason}"


# --- daylight saving time -------------------------------------------------------------------------
# Berlin: 2024-03-31 02:00 CET -> 03:00 CEST (01:00Z); 2024-10-27 03:00 CEST -> 02:00 CET (01:00Z).
# New York: 2024-03-10 02:00 EST -> 03:00 EDT (07:00Z); 2024-11-03 02:00 EDT -> 01:00 EST (06:00Z).


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        # spring forward, daily-style: the missing wall time fires once at the end of the gap
        (
            "30 2 * * *",
            BERLIN,
            "2024-03-30 12:00",
            ["2024-03-31 01:00", "2024-04-01 00:30", "2024-04-02 00:30"],
        ),
        (
            "* 2 * * *",
            BERLIN,
            "2024-03-31 00:58",
            ["2024-03-31 01:00", "2024-04-01 00:00", "2024-04-01 00:01"],
        ),
        ("0 30 2 * * *", BERLIN, "2024-03-30 12:00", ["2024-03-31 01:00", "2024-04-01 00:30"]),
        ("30 2 * * *", NEW_YORK, "2024-03-09 12:00", ["2024-03-10 07:00", "2024-03-11 06:30"]),
        # spring forward, sub-daily: missing wall times are skipped, each real hour fires once
        (
            "30 * * * *",
            BERLIN,
            "2024-03-31 00:00",
            ["2024-03-31 00:30", "2024-03-31 01:30", "2024-03-31 02:30"],
        ),
        (
            "0 * * * *",
            NEW_YORK,
            "2024-03-10 06:00",
            ["2024-03-10 07:00", "2024-03-10 08:00"],
        ),
        # fall back, daily-style: once, at the first occurrence
        (
            "30 2 * * *",
            BERLIN,
            "2024-10-26 12:00",
            ["2024-10-27 00:30", "2024-10-28 01:30"],
        ),
        (
            "*/20 2 * * *",
            BERLIN,
            "2024-10-26 12:00",
            ["2024-10-27 00:00", "2024-10-27 00:20", "2024-10-27 00:40", "2024-10-28 01:00"],
        ),
        ("30 1 * * *", NEW_YORK, "2024-11-02 12:00", ["2024-11-03 05:30", "2024-11-04 06:30"]),
        # fall back, sub-daily: every real hour, both 02:30 CEST and 02:30 CET
        (
            "30 * * * *",
            BERLIN,
            "2024-10-26 23:00",
            ["2024-10-26 23:30", "2024-10-27 00:30", "2024-10-27 01:30", "2024-10-27 02:30"],
        ),
        (
            "0 * * * *",
            NEW_YORK,
            "2024-11-03 04:30",
            ["2024-11-03 05:00", "2024-11-03 06:00", "2024-11-03 07:00"],
        ),
        # `after` inside the first pass of the repeated hour
        ("30 * * * *", BERLIN, "2024-10-27 00:40", ["2024-10-27 01:30", "2024-10-27 02:30"]),
        (
            "*/20 * * * *",
            BERLIN,
            "2024-10-27 00:30",
            ["2024-10-27 00:40", "2024-10-27 01:00", "2024-10-27 01:20"],
        ),
        ("30 2 * * *", BERLIN, "2024-10-27 00:40", ["2024-10-28 01:30"]),
        # `after` inside the second pass
        ("30 * * * *", BERLIN, "2024-10-27 01:10", ["2024-10-27 01:30", "2024-10-27 02:30"]),
        # a whole-day schedule is unaffected by the transition
        ("0 0 * * *", BERLIN, "2024-03-30 12:00", ["2024-03-30 23:00", "2024-03-31 22:00"]),
    ],
)
def test_dst_policy(expr: str, tz: ZoneInfo, after: str, expected: list[str]) -> None:
    assert fires(expr, tz, utc(after), len(expected)) == [utc(t) for t in expected]


def _oracle(
    matches: Callable[[datetime], bool],
    daily_style: bool,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
) -> list[datetime]:
    """Fire times in (start, end] by walking every real minute; independent of the cron code."""
    times: list[datetime] = []
    moment = start + timedelta(minutes=1)
    while moment <= end:
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None)
        if matches(wall) and not (daily_style and local.fold == 1):
            times.append(moment)
        # daily-style walls that fell into the gap fire at its end (the first minute after it)
        previous = (moment - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
        jump = (wall - previous) // timedelta(minutes=1)
        skipped = [previous + timedelta(minutes=k) for k in range(1, jump)]
        if daily_style and any(matches(w) for w in skipped) and moment not in times:
            times.append(moment)
        moment += timedelta(minutes=1)
    return times


_EVE_OF_TRANSITION = {
    ("spring", "Europe/Berlin"): "2024-03-30",
    ("autumn", "Europe/Berlin"): "2024-10-26",
    ("spring", "America/New_York"): "2024-03-09",
    ("autumn", "America/New_York"): "2024-11-02",
}


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK])
@pytest.mark.parametrize("night", ["spring", "autumn"])
@pytest.mark.parametrize(
    ("expr", "matches"),
    [
        ("*/7 * * * *", lambda w: w.minute % 7 == 0),
        ("45 */2 * * *", lambda w: w.minute == 45 and w.hour % 2 == 0),
        ("10,50 1-3 * * *", lambda w: w.minute in (10, 50) and 1 <= w.hour <= 3),
        ("*/15 2 * * *", lambda w: w.minute % 15 == 0 and w.hour == 2),
    ],
)
def test_dst_nights_agree_with_a_minute_by_minute_walk(
    expr: str, matches: Callable[[datetime], bool], tz: ZoneInfo, night: str
) -> None:
    day = _EVE_OF_TRANSITION[(night, tz.key)]
    start = datetime.fromisoformat(f"{day} 20:00").replace(tzinfo=tz).astimezone(UTC)
    end = start + timedelta(hours=12)
    schedule = parse_cron(expr)
    expected = _oracle(matches, schedule.daily_style, tz, start, end)
    got = [t for t in fires(expr, tz, start, len(expected) + 1) if t <= end]
    assert got == expected
    assert expected, "the window must contain fire times"


def test_memo_does_not_leak_between_zones_or_backwards() -> None:
    schedule = parse_cron("0 5 * * *")
    late = utc("2024-06-01 12:00")
    assert schedule.next_after(late, TZ_UTC) == utc("2024-06-02 05:00")
    assert schedule.next_after(late, BERLIN) == utc("2024-06-02 03:00")
    assert schedule.next_after(utc("2024-05-01 00:00"), TZ_UTC) == utc("2024-05-01 05:00")
    assert schedule.next_after(late, TZ_UTC) == utc("2024-06-02 05:00")


@pytest.mark.parametrize(
    ("expr", "fields"),
    [
        ("00005 * * * *", "0 5 * * * *"),
        ("*/0015 * * * *", "0 */15 * * * *"),
        pytest.param("0" * 5000 + "5 * * * *", "0 5 * * * *", id="5000-leading-zeros"),
    ],
)
def test_leading_zeros_do_not_make_a_value_out_of_range(expr: str, fields: str) -> None:
    assert parse_cron(expr).fields == fields
