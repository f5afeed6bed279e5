"""Standby schedulers: take a free lease, wait on a live holder, take over a silent one."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from scheduler import standby
from scheduler.standby import Watch, try_lease
from scheduler.store import lease
from scheduler.store.db import Database
from scheduler.store.lease import Holder, LeaseHeld
from scheduler.store.schema import scheduler_lease
from scheduler.tasktime import iso

T0 = datetime(2024, 1, 2, 13, 0, tzinfo=UTC)
TTL = lease.STANDBY_TTL.total_seconds()
OTHER = Holder("other-host", 4242, T0, T0)


def hold(db: Database, holder: Holder, heartbeat: datetime) -> None:
    """Write the lease as another scheduler (another host) would."""
    with db.write() as conn:
        conn.execute(scheduler_lease.delete())
        conn.execute(
            insert(scheduler_lease).values(
                name="scheduler", host=holder.host, pid=holder.pid,
                since=iso(holder.since), heartbeat=iso(heartbeat),
            )
        )


def look(db: Database, watch: Watch, mono: float, now: datetime = T0) -> bool:
    with db.write() as conn:
        return try_lease(conn, now, mono, watch)


def holder(db: Database) -> Holder | None:
    with db.read() as conn:
        return lease.current(conn)


def test_a_free_lease_is_taken_at_once(db: Database) -> None:
    assert look(db, Watch(), 0.0)
    current = holder(db)
    assert current is not None and current.is_me()


def test_a_beating_holder_is_never_replaced(db: Database) -> None:
    watch = Watch()
    for beat in range(10):
        hold(db, OTHER, T0 + timedelta(seconds=beat))
        assert not look(db, watch, mono=beat * TTL)  # the heartbeat moved since the last look
    current = holder(db)
    assert current is not None and current.host == "other-host"


def test_a_silent_holder_is_replaced_after_the_ttl_of_our_own_clock(db: Database) -> None:
    # given a holder whose heartbeat stands still (its wall time may be anything: far ahead here)
    hold(db, OTHER, T0 + timedelta(days=365))
    watch = Watch()
    assert not look(db, watch, mono=100.0)
    assert not look(db, watch, mono=100.0 + TTL - 0.1)
    # when it has stood still for the TTL by the standby's monotonic clock, then it is taken
    assert look(db, watch, mono=100.0 + TTL)
    current = holder(db)
    assert current is not None and current.is_me()


def test_take_over_is_a_compare_and_swap(db: Database) -> None:
    hold(db, OTHER, T0)
    seen = holder(db)
    assert seen is not None
    hold(db, OTHER, T0 + timedelta(seconds=1))  # the holder renewed after we looked
    with db.write() as conn:
        assert not lease.take_over(conn, T0, seen)
    current = holder(db)
    assert current is not None and current.host == "other-host"


def test_a_frozen_holder_that_comes_back_finds_the_lease_gone(db: Database) -> None:
    # given this process held the lease, then froze, and a standby elsewhere took it over
    with db.write() as conn:
        lease.acquire(conn, T0)
    hold(db, OTHER, T0 + timedelta(seconds=10))
    # when it renews on waking, then it is told to step down
    with pytest.raises(LeaseHeld, match="other-host"), db.write() as conn:
        lease.renew(conn, T0 + timedelta(seconds=11))


def test_the_host_name_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lease.HOST_VARIABLE, "scheduler-b")
    assert Holder.me(T0).host == "scheduler-b"


def test_wait_for_lease_returns_false_when_stopped(db: Database) -> None:
    hold(db, OTHER, T0)
    stop = threading.Event()
    stop.set()
    assert not standby.wait_for_lease(db, lambda: T0, stop)


def test_wait_for_lease_says_who_it_waits_for_and_takes_over(db: Database) -> None:
    hold(db, OTHER, T0)
    ticks = iter(float(n) for n in range(100))
    seen: list[Holder] = []
    assert standby.wait_for_lease(
        db, lambda: T0, threading.Event(), mono=lambda: next(ticks) * TTL, on_wait=seen.append
    )
    assert [h.host for h in seen] == ["other-host"]
    current = holder(db)
    assert current is not None and current.is_me()


def test_the_tick_histogram_travels_with_the_heartbeat(db: Database) -> None:
    with db.write() as conn:
        lease.acquire(conn, T0)
        assert lease.tick_stats(conn) is None  # nothing reported yet
        stats = lease.TickStats()
        for seconds in (0.0005, 0.004, 0.004, 3.0, 60.0):
            stats.observe(seconds)
        lease.renew(conn, T0 + timedelta(seconds=1), stats)
        read = lease.tick_stats(conn)
    assert read is not None
    assert (read.total, read.counts[0], read.counts[2], read.counts[-1]) == (5, 1, 3, 4)
    assert read.seconds == pytest.approx(63.0085)
