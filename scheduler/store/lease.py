"""One scheduler per database: a lease row with a heartbeat.

``tomlflow run`` takes the lease before it fires anything and renews it while it runs. A second
scheduler is refused, naming the holder. A lease whose holder is gone is taken over: on the same
host when its process no longer exists, anywhere once its heartbeat is older than the TTL.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update

from scheduler.errors import TomlflowError
from scheduler.store.schema import scheduler_lease
from scheduler.tasktime import from_iso, iso

LEASE_TTL = timedelta(seconds=30)
HEARTBEAT_EVERY = timedelta(seconds=5)
_NAME = "scheduler"


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: datetime
    heartbeat: datetime

    @classmethod
    def me(cls, now: datetime) -> Holder:
        return cls(socket.gethostname(), os.getpid(), now, now)

    def is_me(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid()

    def is_gone(self, now: datetime) -> bool:
        """True when this holder can no longer be running the scheduler."""
        if now - self.heartbeat > LEASE_TTL:
            return True
        return self.host == socket.gethostname() and not _alive(self.pid)


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


def renew(conn: Connection, now: datetime) -> None:
    """Refresh the heartbeat; raises LeaseHeld if another scheduler took the lease meanwhile."""
    held = current(conn)
    if held is None or not held.is_me():
        if held is not None:
            raise LeaseHeld(held)
        acquire(conn, now)
        return
    conn.execute(
        update(scheduler_lease).where(scheduler_lease.c.name == _NAME).values(heartbeat=iso(now))
    )


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
