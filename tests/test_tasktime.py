"""Task times: found in paths and info strings, parsed from --at, written for storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scheduler.tasktime import (
    cron_stamp,
    from_iso,
    iso,
    parse_at,
    task_time_for_fire,
    time_from_text,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # timestamp in the file name
        ("/data/in/20230511T221500.json", utc(2023, 5, 11, 22, 15)),
        ("/data/in/export-20230511T221500-part1.json", utc(2023, 5, 11, 22, 15)),
        # slugs: hour, day, month; as folders or as the file name
        ("/data/2023/05/11/22/events.json", utc(2023, 5, 11, 22)),
        ("/data/2023/05/11/22.json", utc(2023, 5, 11, 22)),
        ("/data/2023/05/11/events.json", utc(2023, 5, 11)),
        ("/data/2023/05/11.json", utc(2023, 5, 11)),
        ("/data/2023/05/events.json", utc(2023, 5, 1)),
        ("/data/2023/05.json", utc(2023, 5, 1)),
        # dash forms
        ("/data/2023-05-11.csv", utc(2023, 5, 11)),
        ("/data/2023-05-11T22.csv", utc(2023, 5, 11, 22)),
        ("2024-01-02", utc(2024, 1, 2)),
        ("2024-01-02T13", utc(2024, 1, 2, 13)),
        ("20240102T130000", utc(2024, 1, 2, 13)),
        # URLs: the bucket is the host, not part of the path
        ("gs://bucket/2023/05/11/events.json", utc(2023, 5, 11)),
        ("s3://bucket/logs/2023/05/11/22/a.gz", utc(2023, 5, 11, 22)),
    ],
)
def test_time_from_path(text: str, expected: datetime) -> None:
    assert time_from_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("?day=2021-07-04", utc(2021, 7, 4)),
        ("?date=2021-07-04", utc(2021, 7, 4)),
        ("?hour=2021-07-04T06", utc(2021, 7, 4, 6)),
        ("?hour_utc=2021-07-04T06", utc(2021, 7, 4, 6)),
        ("?time=2021-07-04T06:30:15Z", utc(2021, 7, 4, 6, 30, 15)),
        ("?timestamp=2021-07-04T06:30:15Z", utc(2021, 7, 4, 6, 30, 15)),
        ("job:day:2021-07-04", utc(2021, 7, 4)),
        # an unusable date= does not hide a good hour=
        ("?date=unknown&hour=2021-07-04T06", utc(2021, 7, 4, 6)),
        # day beats hour even when hour comes first
        ("?hour=2021-07-04T06&day=2020-01-01", utc(2020, 1, 1)),
        # a query time beats the path's
        ("gs://bucket/2023/05/11/f.txt?day=2001-02-03", utc(2001, 2, 3)),
        # Hive-style partition folders count, as the key is looked for anywhere
        ("/warehouse/sales/day=2022-12-31/part-0.parquet", utc(2022, 12, 31)),
        # a query key we do not know falls back to the path
        ("gs://bucket/2023/05/11/f.txt?data=2001-02-03", utc(2023, 5, 11)),
        # flowlord reads a value as a full timestamp first, then an hour, then a day
        ("?date=2020-03-05T15", utc(2020, 3, 5, 15)),
        ("?date=2020-03-05T15:16:17Z", utc(2020, 3, 5, 15, 16, 17)),
        ("?day=2020-03-05T15:16:17.250Z", utc(2020, 3, 5, 15, 16, 17)),
        ("?time=2021-07-04T06:30:15+02:00", utc(2021, 7, 4, 4, 30, 15)),
        ("?hour=2021-07-04", utc(2021, 7, 4)),
        ("?day=2020-03-05T25", utc(2020, 3, 5)),  # no such hour: the day still counts
    ],
)
def test_time_from_info_query(text: str, expected: datetime) -> None:
    assert time_from_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the file-name timestamp beats slugs in the folders
        ("/data/2023/05/11/22/20200101T000000.json", utc(2020, 1, 1)),
        # an hour slug beats a dash date in the file name
        ("/data/2023/05/11/22/report-2020-01-01.csv", utc(2023, 5, 11, 22)),
        # a day slug beats a dash date too
        ("/data/2023/05/11/report-2020-01-01.csv", utc(2023, 5, 11)),
        # a dash date beats a month slug
        ("/data/2023/05/report-2020-01-01.csv", utc(2020, 1, 1)),
        # a timestamp in a folder name is a last resort, after every other shape
        ("/runs/20240102T130000/part.csv", utc(2024, 1, 2, 13)),
        ("/runs/20240102T130000/2023/05/part.csv", utc(2023, 5, 1)),
    ],
)
def test_time_from_path_precedence(text: str, expected: datetime) -> None:
    assert time_from_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an impossible hour slug is passed over for the day it contains
        ("/data/2023/05/11/99/file.txt", utc(2023, 5, 11)),
        # an impossible first match is passed over for a later, real one
        ("/data/2023/13/45/x/2023/05/11/f.txt", utc(2023, 5, 11)),
        ("/data/2023-02-30/2023-02-28.csv", utc(2023, 2, 28)),
        # an impossible match ("0000/20") must not swallow the start of a real one ("2023/05")
        ("/logs/run-990000/2023/05/f.csv", utc(2023, 5, 1)),
        ("/data/20231345T000000.json", None),
        ("?day=2021-13-01", None),
    ],
)
def test_impossible_dates_are_skipped(text: str, expected: datetime | None) -> None:
    assert time_from_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/data/events.json",
        "s3://path/to/file.txt?date=something",
        "?day=not-a-day",
        "/data/v2/2023.csv",
    ],
)
def test_no_time_found(text: str) -> None:
    assert time_from_text(text) is None


def test_text_that_is_no_valid_url_is_searched_as_a_path() -> None:
    assert time_from_text("http://[broken/2023/05/11") == utc(2023, 5, 11)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02", utc(2024, 1, 2)),
        ("2024-01-02T13", utc(2024, 1, 2, 13)),
        ("2024-01-02t13", utc(2024, 1, 2, 13)),
        ("2024-01-02 13", utc(2024, 1, 2, 13)),
        ("2024-01-02T13:04", utc(2024, 1, 2, 13, 4)),
        ("2024-01-02T13:04:05", utc(2024, 1, 2, 13, 4, 5)),
        ("2024-01-02T13:04:05Z", utc(2024, 1, 2, 13, 4, 5)),
        ("2024-01-02T13:04:05z", utc(2024, 1, 2, 13, 4, 5)),
        ("2024-01-02T13:04:05.250Z", utc(2024, 1, 2, 13, 4, 5, 250000)),
        ("2024-01-02T13:04:05+02:00", utc(2024, 1, 2, 11, 4, 5)),
        ("2024-01-02T01:00:00-05:30", utc(2024, 1, 2, 6, 30)),
        ("2024-01-02T13Z", utc(2024, 1, 2, 13)),
        ("  2024-01-02  ", utc(2024, 1, 2)),
    ],
)
def test_parse_at_accepts_day_hour_and_rfc3339(text: str, expected: datetime) -> None:
    parsed = parse_at(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2024/01/02",
        "20240102",
        "2024-1-2",
        "2024-01-02T1",
        "2024-01-02T13:04:05 UTC",
        "2024-01-02Z",
        "2024-13-02",
        "2024-02-30",
        "2024-01-02T24",
        "2024-01-02T13:04:05+25:00",
    ],
)
def test_parse_at_rejects_other_text_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        parse_at(text)


def test_parse_at_message_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"YYYY-MM-DD, YYYY-MM-DDTHH or RFC 3339"):
        parse_at("next tuesday")


@pytest.mark.parametrize(
    ("scheduled", "offset", "expected"),
    [
        (utc(2024, 1, 2, 5), timedelta(0), utc(2024, 1, 2, 5)),
        (utc(2024, 1, 2, 5), timedelta(hours=-24), utc(2024, 1, 1, 5)),
        (utc(2024, 1, 2, 5), timedelta(minutes=90), utc(2024, 1, 2, 6, 30)),
        (utc(2024, 3, 1, 0), timedelta(hours=-1), utc(2024, 2, 29, 23)),
        # Berlin, spring forward (2024-03-31 02:00 -> 03:00): 04:00 CEST is 02:00 UTC, and four
        # elapsed hours before it is 22:00 UTC, though the wall clock only moved back 5 hours.
        (datetime(2024, 3, 31, 4, tzinfo=BERLIN), timedelta(hours=-4), utc(2024, 3, 30, 22)),
        # Berlin, fall back (2024-10-27 03:00 -> 02:00): a day of 25 hours.
        (datetime(2024, 10, 28, 0, tzinfo=BERLIN), timedelta(hours=-24), utc(2024, 10, 26, 23)),
        (datetime(2024, 10, 27, 1, tzinfo=BERLIN), timedelta(hours=2), utc(2024, 10, 27, 1)),
    ],
)
def test_task_time_for_fire_adds_elapsed_offset_in_utc(
    scheduled: datetime, offset: timedelta, expected: datetime
) -> None:
    task_time = task_time_for_fire(scheduled, offset)
    assert task_time == expected
    assert task_time.tzinfo is UTC


def test_task_time_for_fire_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        task_time_for_fire(datetime(2024, 1, 2), timedelta(0))


@pytest.mark.parametrize(
    ("task_time", "stamp"),
    [
        (utc(2024, 1, 2, 13, 59, 59), "2024-01-02T13"),
        (utc(2024, 1, 2), "2024-01-02T00"),
        (datetime(2024, 7, 1, 1, tzinfo=BERLIN), "2024-06-30T23"),
        (utc(999, 1, 2, 3), "0999-01-02T03"),
    ],
)
def test_cron_stamp_is_the_utc_date_hour(task_time: datetime, stamp: str) -> None:
    assert cron_stamp(task_time) == stamp


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (utc(2024, 1, 2, 13), "2024-01-02T13:00:00.000000Z"),
        (utc(2024, 1, 2, 13, 4, 5, 7), "2024-01-02T13:04:05.000007Z"),
        (
            datetime(2024, 1, 2, 14, tzinfo=timezone(timedelta(hours=1))),
            "2024-01-02T13:00:00.000000Z",
        ),
        (utc(5, 1, 1), "0005-01-01T00:00:00.000000Z"),
    ],
)
def test_iso_is_fixed_width_utc(moment: datetime, text: str) -> None:
    assert iso(moment) == text
    assert len(iso(moment)) == 27


def test_iso_rejects_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        iso(datetime(2024, 1, 2))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T13:00:00.000000Z", utc(2024, 1, 2, 13)),
        ("2024-01-02T13:00:00+02:00", utc(2024, 1, 2, 11)),
        ("2024-01-02 13:00:00", utc(2024, 1, 2, 13)),
        ("2024-01-02", utc(2024, 1, 2)),
    ],
)
def test_from_iso_reads_any_offset_and_takes_naive_as_utc(text: str, expected: datetime) -> None:
    parsed = from_iso(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_from_iso_rejects_non_iso_text() -> None:
    with pytest.raises(ValueError):
        from_iso("yesterday")


aware_times = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, BERLIN, timezone(timedelta(hours=-9, minutes=-30))]),
)


# Berlin 1999-03-28 02:00 does not exist (clocks went from 02:00 to 03:00): an instant is still
# meant (PEP 495 reads it with the offset before the gap), which Python's `==` refuses to call
# equal to any time in another zone. The properties speak of instants, so they compare in UTC.
GAP = datetime(1999, 3, 28, 2, 0, tzinfo=BERLIN)


def instant(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


@given(aware_times, aware_times)
@example(GAP, GAP.astimezone(UTC))
def test_iso_text_order_is_time_order(a: datetime, b: datetime) -> None:
    assert (iso(a) < iso(b)) == (instant(a) < instant(b))
    assert (iso(a) == iso(b)) == (instant(a) == instant(b))


@given(aware_times)
@example(GAP)
def test_from_iso_reverses_iso(moment: datetime) -> None:
    assert from_iso(iso(moment)) == instant(moment)
