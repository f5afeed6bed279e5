"""How long to wait before retrying a failed attempt: a pure function of the attempt number.

Randomness is a parameter: the caller draws the jitter (``draw_jitter``) from a ``random.Random``
it owns and passes it in, so tests choose it and nothing here touches global state.
"""

from __future__ import annotations

import random
from datetime import timedelta
from enum import StrEnum

MAX_JITTER = 0.4
"""Largest jitter fraction: a retry waits up to 40 % longer than its delay, as flowlord does."""

CEILING = timedelta(days=30)
"""Longest delay before jitter when ``retry_max_delay`` is not set, so that an exponential
backoff over many attempts stays a real, storable wait instead of overflowing."""

_MICROSECOND = timedelta(microseconds=1)
_MAX_DOUBLINGS = 80  # timedelta.max is under 2**67 microseconds


class Backoff(StrEnum):
    """How the delay grows with each failed attempt (the ``retry_backoff`` rule key)."""

    FIXED = "fixed"
    EXPONENTIAL = "exponential"


def retry_delay(
    attempt: int,
    base: timedelta,
    backoff: Backoff,
    max_delay: timedelta | None,
    jitter: float,
) -> timedelta:
    """Return the wait before the attempt after failed attempt number ``attempt`` (1-based).

    FIXED waits ``base``; EXPONENTIAL waits ``base * 2**(attempt - 1)``. That delay is capped at
    ``max_delay`` (or ``CEILING`` when None) and then stretched by ``1 + jitter``. Raises
    ValueError when ``attempt`` < 1, ``base`` or ``max_delay`` is negative, or ``jitter`` lies
    outside ``[0, MAX_JITTER]``.
    """
    _check(attempt, base, max_delay, jitter)
    # Beyond 2**_MAX_DOUBLINGS any non-zero base already exceeds every possible cap.
    doublings = min(attempt - 1, _MAX_DOUBLINGS)
    factor = 2**doublings if backoff == Backoff.EXPONENTIAL else 1
    cap = CEILING if max_delay is None else max_delay
    # Whole microseconds in Python ints: the product may exceed what a timedelta can hold.
    micros = min((base // _MICROSECOND) * factor, cap // _MICROSECOND)
    return timedelta(microseconds=micros) * (1 + jitter)


def draw_jitter(rng: random.Random) -> float:
    """Draw a jitter fraction uniformly from ``[0, MAX_JITTER]`` using ``rng``."""
    return rng.uniform(0.0, MAX_JITTER)


def _check(attempt: int, base: timedelta, max_delay: timedelta | None, jitter: float) -> None:
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    if base < timedelta(0):
        raise ValueError(f"retry delay must not be negative, got {base}")
    if max_delay is not None and max_delay < timedelta(0):
        raise ValueError(f"retry max delay must not be negative, got {max_delay}")
    if not 0.0 <= jitter <= MAX_JITTER:
        raise ValueError(f"jitter must lie in [0, {MAX_JITTER}], got {jitter}")
