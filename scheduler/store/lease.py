"""One scheduler per database: a lease row with a heartbeat.

``tomlflow run`` takes the lease before it fires anything and renews it while it runs. A second
scheduler is refused, naming the holder. A lease whose holder is gone is taken over: on the same
host when its process no longer exists, anywhere once its heartbeat is older than the TTL.

A standby (``run --standby``) waits instead: it watches the heartbeat change, on its own
monotonic clock (so clocks that differ between hosts don't matter), and takes the lease over
with a compare-and-swap once it has stood still for ``STANDBY_TTL``. A holder that was only
frozen finds on its next renewal that the lease is someone else's, and steps down.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from sqlalchemy import Connection, delete, insert, select

from scheduler.errors import TomlflowError
from scheduler.store.dbapi import Statement
from scheduler.store.schema import scheduler_lease
from scheduler.tasktime import from_iso, iso

LEASE_TTL = timedelta(seconds=30)
HEARTBEAT_EVERY = timedelta(seconds=1)
# A standby takes over once the heartbeat has not moved for this long (by its own clock): three
# missed beats. With a watch every half second, a dead holder is replaced within about 4 s.
STANDBY_TTL = timedelta(seconds=3)
_NAME = "scheduler"
HOST_VARIABLE = "TOMLFLOW_HOSTNAME"


def host_name() -> str:
    """The name this process gives as a lease holder: $TOMLFLOW_HOSTNAME, else the host name."""
    return os.environ.get(HOST_VARIABLE) or socket.gethostname()


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: datetime
    heartbeat: datetime

    @classmethod
    def me(cls, now: datetime) -> Holder:
        return cls(host_name(), os.getpid(), now, now)

    def is_me(self) -> bool:
        return self.host == host_name() and self.pid == os.getpid()

    def is_gone(self, now: datetime) -> bool:
        """True when this holder can no longer be running the scheduler."""
        return now - self.heartbeat > LEASE_TTL or self.is_dead_here()

    def is_dead_here(self) -> bool:
        """True when the holder ran on this host and its process no longer exists."""
        return self.host == host_name() and not _alive(self.pid)


class LeaseHeld(TomlflowError):
    """Another scheduler holds the lease on this database."""

    def __init__(self, holder: Holder) -> None:
        self.holder = holder
        super().__init__(
            f"another scheduler is running on this database: pid {holder.pid} on "
            f"{holder.host} since {iso(holder.since)} (last heartbeat {iso(holder.heartbeat)})"
        )


def current(conn: Connection) -> Holder | None:
    row = conn.execute(select(scheduler_lease).where(scheduler_lease.c.name == _NAME)).first()
    if row is None:
        return None
    return Holder(row.host, row.pid, from_iso(row.since), from_iso(row.heartbeat))


def acquire(conn: Connection, now: datetime) -> Holder | None:
    """Take the lease for this process; returns the holder it replaced (stale), or None.

    Raises LeaseHeld when a live scheduler holds it. Call inside a write transaction.
    """
    held = current(conn)
    if held is not None and not held.is_me() and not held.is_gone(now):
        raise LeaseHeld(held)
    me = Holder.me(now)
    conn.execute(delete(scheduler_lease).where(scheduler_lease.c.name == _NAME))
    conn.execute(
        insert(scheduler_lease).values(
            name=_NAME, host=me.host, pid=me.pid, since=iso(now), heartbeat=iso(now)
        )
    )
    return held if held is not None and not held.is_me() else None


def take_over(conn: Connection, now: datetime, seen: Holder) -> bool:
    """Replace ``seen`` as the holder, only if the lease still is exactly as it was seen (a
    holder that renewed meanwhile keeps it). Call inside a write transaction; True if taken."""
    where = (
        (scheduler_lease.c.name == _NAME)
        & (scheduler_lease.c.host == seen.host)
        & (scheduler_lease.c.pid == seen.pid)
        & (scheduler_lease.c.heartbeat == iso(seen.heartbeat))
    )
    if conn.execute(delete(scheduler_lease).where(where)).rowcount != 1:
        return False
    me = Holder.me(now)
    conn.execute(
        insert(scheduler_lease).values(
            name=_NAME, host=me.host, pid=me.pid, since=iso(now), heartbeat=iso(now)
        )
    )
    return True


_RENEW = Statement(
    "UPDATE scheduler_lease SET heartbeat = ?, ticks = COALESCE(?, ticks) "
    "WHERE name = ? AND host = ? AND pid = ?"
)


def renew(conn: Connection, now: datetime, ticks: TickStats | None = None) -> None:
    """Refresh the heartbeat (and the tick histogram, when given); raises LeaseHeld if another
    scheduler took the lease meanwhile."""
    # One statement while we hold it (every second, inside the tick); read only when we don't.
    stats = None if ticks is None else ticks.to_json()
    if _RENEW.run(conn, (iso(now), stats, _NAME, host_name(), os.getpid())) == 1:
        return
    held = current(conn)
    if held is not None:
        raise LeaseHeld(held)
    acquire(conn, now)


@dataclass
class TickStats:
    """How long the holder's ticks took: a cumulative histogram in Prometheus's shape."""

    BUCKETS: ClassVar[tuple[float, ...]] = (
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    )
    counts: list[int] = field(default_factory=lambda: [0] * len(TickStats.BUCKETS))
    total: int = 0
    seconds: float = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
        self.total += 1
        self.seconds += seconds

    def to_json(self) -> str:
        return json.dumps({"counts": self.counts, "total": self.total, "seconds": self.seconds})

    @classmethod
    def from_json(cls, text: str) -> TickStats | None:
        """The stats a holder stored; None for anything else (an older holder, a bad value)."""
        try:
            data = json.loads(text)
            counts = [int(n) for n in data["counts"]]
            stats = cls(counts, int(data["total"]), float(data["seconds"]))
        except (ValueError, TypeError, KeyError):
            return None
        return stats if len(counts) == len(cls.BUCKETS) else None


def tick_stats(conn: Connection) -> TickStats | None:
    """The lease holder's tick histogram, if one holds the lease and has reported it."""
    text = conn.scalar(select(scheduler_lease.c.ticks).where(scheduler_lease.c.name == _NAME))
    return TickStats.from_json(text) if text else None


def release(conn: Connection) -> None:
    """Give the lease up, if this process holds it."""
    held = current(conn)
    if held is not None and held.is_me():
        conn.execute(delete(scheduler_lease).where(scheduler_lease.c.name == _NAME))


def create(conn: Connection) -> None:
    """Migration step: the lease table."""
    scheduler_lease.create(conn, checkfirst=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
