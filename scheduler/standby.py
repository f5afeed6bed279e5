"""Standing by: a scheduler that waits for the lease of another one and takes over when it dies.

``tomlflow run --standby`` on a second host (one PostgreSQL database between them) calls
``wait_for_lease``: it watches the holder's heartbeat and takes the lease once the heartbeat has
stood still for ``lease.STANDBY_TTL`` on this process's own monotonic clock, so neither a dead
process nor a vanished host (where no pid check can help) holds the database for long, and the
hosts' wall clocks never need to agree. The scheduler then starts as any other does: it closes
or adopts what the last holder left running, and cron fires exist once by their unique key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from scheduler.store import lease
from scheduler.store.db import Database
from scheduler.store.lease import Holder

log = logging.getLogger(__name__)

WATCH_EVERY = 0.5  # seconds between looks at the lease


@dataclass
class Watch:
    """What a standby has seen: the holder as last read, and when (monotonic) it last changed."""

    seen: Holder | None = None
    changed_at: float = 0.0


def try_lease(conn: Connection, now: datetime, mono: float, watch: Watch) -> bool:
    """One look at the lease inside a write transaction; True when this process now holds it.

    Takes a free lease, or one whose holder's process is gone from this host; takes over a
    holder whose heartbeat has not changed for ``STANDBY_TTL`` by ``mono``; else notes what it
    saw. Wall-clock ages are never compared: the hosts' clocks need not agree.
    """
    held = lease.current(conn)
    if held is None or held.is_me() or held.is_dead_here():
        lease.acquire(conn, now)
        return True
    if watch.seen is None or (held.host, held.pid, held.heartbeat) != (
        watch.seen.host,
        watch.seen.pid,
        watch.seen.heartbeat,
    ):
        watch.seen, watch.changed_at = held, mono
        return False
    if mono - watch.changed_at < lease.STANDBY_TTL.total_seconds():
        return False
    if lease.take_over(conn, now, held):
        log.warning(
            "took the lease over from pid %d on %s: no heartbeat for %.0f s",
            held.pid,
            held.host,
            mono - watch.changed_at,
        )
        return True
    return False


def wait_for_lease(
    db: Database,
    now: Callable[[], datetime],
    stop: threading.Event,
    *,
    mono: Callable[[], float] = time.monotonic,
    on_wait: Callable[[Holder], None] | None = None,
) -> bool:
    """Block until this process holds the lease (True) or ``stop`` is set (False).

    ``on_wait`` is told about each new holder seen while waiting (the command line says so).
    """
    watch = Watch()
    told: tuple[str, int] | None = None  # the holder last named to on_wait
    while not stop.is_set():
        with db.write() as conn:
            if try_lease(conn, now(), mono(), watch):
                return True
        seen = watch.seen
        if on_wait is not None and seen is not None and (seen.host, seen.pid) != told:
            on_wait(seen)
            told = (seen.host, seen.pid)
        stop.wait(WATCH_EVERY)
    return False
