"""Retry delays: fixed or exponential, capped, then stretched by a jitter the caller draws."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from scheduler.retry import CEILING, MAX_JITTER, Backoff, draw_jitter, retry_delay

S = timedelta(seconds=1)
M = timedelta(minutes=1)
FIXED, EXPONENTIAL = Backoff.FIXED, Backoff.EXPONENTIAL


@pytest.mark.parametrize(
    ("attempt", "base", "backoff", "max_delay", "expected"),
    [
        # fixed: the same delay every time
        (1, 5 * M, FIXED, None, 5 * M),
        (2, 5 * M, FIXED, None, 5 * M),
        (10, 5 * M, FIXED, None, 5 * M),
        (1, timedelta(0), FIXED, None, timedelta(0)),
        # a cap below the base caps fixed delays too
        (1, 5 * M, FIXED, 2 * M, 2 * M),
        # exponential: doubles per failed attempt
        (1, S, EXPONENTIAL, None, S),
        (2, S, EXPONENTIAL, None, 2 * S),
        (3, S, EXPONENTIAL, None, 4 * S),
        (4, S, EXPONENTIAL, None, 8 * S),
        (5, 30 * S, EXPONENTIAL, None, 8 * M),
        (2, timedelta(milliseconds=250), EXPONENTIAL, None, timedelta(milliseconds=500)),
        # exponential with a cap: grows until it reaches the cap, then stays there
        (3, S, EXPONENTIAL, 5 * S, 4 * S),
        (4, S, EXPONENTIAL, 5 * S, 5 * S),
        (9, S, EXPONENTIAL, 5 * S, 5 * S),
        (7, M, EXPONENTIAL, timedelta(hours=1), timedelta(hours=1)),
        (4, S, EXPONENTIAL, 8 * S, 8 * S),
        (1, S, EXPONENTIAL, timedelta(0), timedelta(0)),
        # without a cap the ceiling keeps huge attempt numbers finite
        (64, S, EXPONENTIAL, None, CEILING),
        (10_000, S, EXPONENTIAL, None, CEILING),
        (10_000, S, EXPONENTIAL, timedelta(days=365_000), timedelta(days=365_000)),
        (10_000, timedelta(0), EXPONENTIAL, None, timedelta(0)),
    ],
)
def test_delay_without_jitter(
    attempt: int,
    base: timedelta,
    backoff: Backoff,
    max_delay: timedelta | None,
    expected: timedelta,
) -> None:
    assert retry_delay(attempt, base, backoff, max_delay, jitter=0.0) == expected


@pytest.mark.parametrize(
    ("attempt", "base", "backoff", "max_delay", "jitter", "expected"),
    [
        (1, 10 * S, FIXED, None, 0.4, 14 * S),
        (1, 10 * S, FIXED, None, 0.25, timedelta(seconds=12.5)),
        (3, 10 * S, EXPONENTIAL, None, 0.1, 44 * S),
        # jitter stretches the capped delay, so a retry may wait past the cap by up to 40 %
        (9, S, EXPONENTIAL, 10 * S, 0.4, 14 * S),
        (1, timedelta(0), FIXED, None, 0.4, timedelta(0)),
    ],
)
def test_jitter_stretches_the_capped_delay(
    attempt: int,
    base: timedelta,
    backoff: Backoff,
    max_delay: timedelta | None,
    jitter: float,
    expected: timedelta,
) -> None:
    assert retry_delay(attempt, base, backoff, max_delay, jitter) == expected


@pytest.mark.parametrize(
    ("attempt", "base", "max_delay", "jitter", "message"),
    [
        (0, S, None, 0.0, "attempt must be 1 or more"),
        (-1, S, None, 0.0, "attempt must be 1 or more"),
        (1, -S, None, 0.0, "must not be negative"),
        (1, S, -S, 0.0, "max delay must not be negative"),
        (1, S, None, -0.01, "jitter must lie in"),
        (1, S, None, 0.41, "jitter must lie in"),
    ],
)
def test_bad_arguments_are_rejected(
    attempt: int, base: timedelta, max_delay: timedelta | None, jitter: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        retry_delay(attempt, base, Backoff.FIXED, max_delay, jitter)


@pytest.mark.parametrize(("text", "backoff"), [("fixed", FIXED), ("exponential", EXPONENTIAL)])
def test_backoff_values_are_the_rule_spellings(text: str, backoff: Backoff) -> None:
    assert Backoff(text) is backoff
    assert backoff == text


def test_backoff_given_as_its_string_value_works_the_same() -> None:
    exponential = Backoff("exponential")
    assert retry_delay(3, S, exponential, None, 0.0) == 4 * S


def test_draw_jitter_stays_within_zero_and_forty_percent() -> None:
    rng = random.Random(20240102)
    draws = [draw_jitter(rng) for _ in range(2000)]
    assert all(0.0 <= d <= MAX_JITTER for d in draws)
    # spread over the whole range, not stuck at one end
    assert min(draws) < 0.02
    assert max(draws) > 0.38


def test_draw_jitter_depends_only_on_the_given_generator() -> None:
    first = [draw_jitter(random.Random(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert draw_jitter(random.Random(7)) != draw_jitter(random.Random(8))
