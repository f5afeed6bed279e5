"""Template rendering: flowlord-compatible tokens, rendered in one pass."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.templates import is_zero_time, pod_name, render

# Every field is single-digit where it can be, so missing zero-padding shows.
TASK_TIME = datetime(2024, 3, 9, 7, 5, 9, tzinfo=UTC)
HOST = "etl-worker-5d8f7-qx2zt"


def never_called() -> str:
    raise AssertionError("a lazy value was computed although its token is absent")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{yyyy}", "2024"),
        ("{yy}", "24"),
        ("{mm}", "03"),
        ("{dd}", "09"),
        ("{hh}", "07"),
        ("{min}", "05"),
        ("{TS}", "20240309T070509"),
        ("{SLUG}", "2024/03/09/07"),
        ("{HOUR_SLUG}", "2024/03/09/07"),
        ("{DAY_SLUG}", "2024/03/09"),
        ("{MONTH_SLUG}", "2024/03"),
        (
            "s3://bucket/{DAY_SLUG}/part-{TS}.json.gz",
            "s3://bucket/2024/03/09/part-20240309T070509.json.gz",
        ),
        ("{yyyy}-{mm}-{dd}T{hh}:{min}", "2024-03-09T07:05"),
        ("", ""),
        ("./plain/file.txt", "./plain/file.txt"),
    ],
)
def test_time_tokens_render_zero_padded(template: str, expected: str) -> None:
    assert render(template, TASK_TIME, host=HOST) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{YYYY}", "2024"),
        ("{Yyyy}", "2024"),
        ("{yYyY}", "2024"),
        ("{YY}", "24"),
        ("{yY}", "24"),
        ("{MM}", "03"),
        ("{Mm}", "03"),
        ("{DD}", "09"),
        ("{dD}", "09"),
        ("{HH}", "07"),
        ("{Hh}", "07"),
        ("{HOST}", HOST),
        ("{Host}", HOST),
        ("{POD}", "5d8f7-qx2zt"),
        ("{UUID}", "0badcafe"),
        ("{Uuid}", "0badcafe"),
    ],
)
def test_case_insensitive_tokens_accept_any_letter_case(template: str, expected: str) -> None:
    assert render(template, TASK_TIME, host=HOST, uuid=lambda: "0badcafe") == expected


@pytest.mark.parametrize(
    "template",
    ["{MIN}", "{Min}", "{ts}", "{slug}", "{Slug}", "{day_slug}", "{month_slug}", "{hour_slug}"],
)
def test_exact_case_tokens_in_another_case_stay_literal(template: str) -> None:
    # Given a token flowlord only knows in one spelling, when rendered, then it is not a token.
    assert render(template, TASK_TIME, host=HOST) == template


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{foo}", "{foo}"),
        ("{yyy}", "{yyy}"),
        ("{ yyyy }", "{ yyyy }"),
        ("{{yyyy}}", "{2024}"),
        ("{yyyy", "{yyyy"),
        ("{meta:}", "{meta:}"),
        ("{meta:da ta}", "{meta:da ta}"),
        ("{meta:a-b}", "{meta:a-b}"),
    ],
)
def test_text_that_is_not_a_token_is_kept(template: str, expected: str) -> None:
    assert render(template, TASK_TIME, {"da ta": "x", "a-b": "x"}, host=HOST) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("path/{yyyy}/{mm}#{yyyy}/{mm}", "path/2024/03#{yyyy}/{mm}"),
        ("a{dd}#b{dd}#c{dd}", "a09#b{dd}#c{dd}"),
        ("x#{meta:file}{host}{uuid}", "x#{meta:file}{host}{uuid}"),
        ("#{yyyy}", "#2024"),
        ("{yyyy}#", "2024#"),
    ],
)
def test_text_after_a_hash_is_left_as_is_unless_the_hash_comes_first(
    template: str, expected: str
) -> None:
    rendered = render(template, TASK_TIME, {"file": "f.txt"}, host=HOST, uuid=never_called)
    assert rendered == expected


@pytest.mark.parametrize("zero", [None, datetime(1, 1, 1, tzinfo=UTC)])
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{yyyy}/{MM}/{dd}/{hh}/{min}", "{yyyy}/{MM}/{dd}/{hh}/{min}"),
        ("{TS}-{SLUG}-{DAY_SLUG}-{MONTH_SLUG}", "{TS}-{SLUG}-{DAY_SLUG}-{MONTH_SLUG}"),
        ("{host}/{pod}/{uuid}/{meta:day}/{yyyy}", f"{HOST}/5d8f7-qx2zt/0badcafe/monday/{{yyyy}}"),
    ],
)
def test_zero_task_time_leaves_only_time_tokens_untouched(
    zero: datetime | None, template: str, expected: str
) -> None:
    rendered = render(template, zero, {"day": "monday"}, host=HOST, uuid=lambda: "0badcafe")
    assert rendered == expected


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"file": "s3://in/a.csv"}, "load s3://in/a.csv into "),
        ({"file": "s3://in/a.csv", "table": "sales"}, "load s3://in/a.csv into sales"),
        ({}, "load  into "),
        (None, "load  into "),
    ],
)
def test_meta_tokens_take_the_value_or_empty_when_missing(
    meta: dict[str, str] | None, expected: str
) -> None:
    assert render("load {meta:file} into {meta:table}", TASK_TIME, meta, host=HOST) == expected


@pytest.mark.parametrize("value", ["{yyyy}", "{host}", "{meta:other}", "{uuid}"])
def test_substituted_values_are_never_rendered_again(value: str) -> None:
    # Given a meta value that looks like a token, when rendered, then it arrives verbatim.
    rendered = render("{meta:v}", TASK_TIME, {"v": value, "other": "x"}, uuid=never_called)
    assert rendered == value


@pytest.mark.parametrize(
    ("host", "pod"),
    [
        ("test-hostname-abcdefghij-12345", "abcdefghij-12345"),
        ("web-7f9c-x2kq", "7f9c-x2kq"),
        ("a-b", "a-b"),
        ("standalone", "standalone"),
        ("trailing-", "trailing-"),
        ("", ""),
    ],
)
def test_pod_is_the_last_two_dash_parts_of_the_host(host: str, pod: str) -> None:
    assert pod_name(host) == pod
    assert render("{pod}", TASK_TIME, host=host) == pod


def test_host_defaults_to_this_machine() -> None:
    assert render("{host}", TASK_TIME) == socket.gethostname()


def test_one_uuid_per_render_shared_by_every_uuid_token() -> None:
    calls: list[str] = []

    def make_id() -> str:
        calls.append("id")
        return f"{len(calls):08x}"

    rendered = render("{uuid}/{UUID}/{uuid}", TASK_TIME, uuid=make_id)
    assert rendered == "00000001/00000001/00000001"
    assert calls == ["id"]


def test_default_uuid_is_eight_fresh_hex_characters() -> None:
    first = render("file-{uuid}.json", TASK_TIME)
    second = render("file-{uuid}.json", TASK_TIME)
    assert re.fullmatch(r"file-[0-9a-f]{8}\.json", first)
    assert first != second


def test_an_edited_template_renders_as_it_now_reads() -> None:
    # each distinct template is parsed once and reused: an edit must never meet the old parse
    assert render("out/{yyyy}/{meta:a}", TASK_TIME, {"a": "x"}) == "out/2024/x"
    assert render("out/{mm}/{meta:a}#{dd}", TASK_TIME, {"a": "y"}) == "out/03/y#{dd}"
    assert render("out/{yyyy}/{meta:a}", None, {"a": "z"}) == "out/{yyyy}/z"


def test_lazy_values_are_not_computed_without_their_token() -> None:
    assert render("{yyyy}", TASK_TIME, uuid=never_called) == "2024"


@pytest.mark.parametrize(
    ("task_time", "expected"),
    [
        # 00:30 in Berlin (UTC+1 in winter) is still the previous day in UTC.
        (datetime(2024, 1, 2, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")), "2024/01/01/23"),
        # In summer Berlin is UTC+2.
        (datetime(2024, 7, 1, 1, 0, tzinfo=ZoneInfo("Europe/Berlin")), "2024/06/30/23"),
        (datetime(2024, 1, 2, 0, 30, tzinfo=UTC), "2024/01/02/00"),
    ],
)
def test_time_tokens_render_the_task_time_in_utc(task_time: datetime, expected: str) -> None:
    assert render("{SLUG}", task_time) == expected


@pytest.mark.parametrize(
    ("task_time", "expected"),
    [
        (datetime(999, 12, 31, 23, tzinfo=UTC), "0999 99 12 31 23"),
        (datetime(2000, 1, 1, tzinfo=UTC), "2000 00 01 01 00"),
        (datetime(2009, 10, 5, 4, tzinfo=UTC), "2009 09 10 05 04"),
    ],
)
def test_years_and_fields_are_padded_at_the_edges(task_time: datetime, expected: str) -> None:
    assert render("{yyyy} {yy} {mm} {dd} {hh}", task_time) == expected


def test_naive_task_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        render("{yyyy}", datetime(2024, 1, 2))


@pytest.mark.parametrize(
    ("task_time", "zero"),
    [
        (None, True),
        (datetime(1, 1, 1, tzinfo=UTC), True),
        (datetime(1, 1, 1, 0, 0, 1, tzinfo=UTC), False),
        (TASK_TIME, False),
    ],
)
def test_zero_time_is_none_or_go_zero(task_time: datetime | None, zero: bool) -> None:
    assert is_zero_time(task_time) is zero
