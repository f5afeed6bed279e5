"""Posting alerts to a Slack-compatible webhook: ``alert`` results at once, failures as a digest.

The digest policy is flowlord's: failed alerts (retries exhausted) are batched and sent at most
once per wait. The wait starts at ``[alerts] min_frequency``, doubles (up to ``max_frequency``)
each time a wait ends with new failures to send, and halves back toward the minimum each time a
wait passes without any. With the wait back at its minimum and a quiet period behind it, the
next failure goes out at once. ``plan`` is that policy as a pure function of explicit times.

``Notifier`` is the side with effects: it reads unsent ``alerts`` rows, posts them outside any
transaction, and marks them sent in a short write transaction afterwards. A webhook that is
down costs a logged warning and a retry later, with backoff; it never raises into the scheduler.
Without ``[alerts] webhook`` nothing is posted and alerts stay recorded in the table.
``AlertThread`` runs a Notifier's polls on a thread of their own, so a webhook that hangs until
its timeout never holds up a scheduler tick.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import unquote, urlsplit, urlunsplit

from scheduler.config import AlertsConfig
from scheduler.errors import StoreError
from scheduler.redact import redact
from scheduler.store import alerting
from scheduler.store.alerting import AlertKind, PendingAlert
from scheduler.store.db import Database

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(seconds=5)  # how often the store is asked for unsent alerts
BACKOFF_FIRST = timedelta(seconds=5)  # wait after a failed post, doubling per failure...
BACKOFF_MAX = timedelta(minutes=5)  # ...up to this
POST_TIMEOUT = 5.0  # seconds; AlertThread keeps the scheduler's tick from waiting for it
BATCH = 5000  # unsent alerts read per check; more wait for the next one
MAX_SINGLE = 10  # more alert results than this at once go out as one message, not a flood
MAX_RANGES = 6  # task-time ranges shown per digest line
Payload = dict[str, str]

# -- the digest policy ------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestState:
    """Where the digest stands. ``period_start`` None means idle: a failure goes out at once."""

    min_wait: timedelta
    max_wait: timedelta
    wait: timedelta
    period_start: datetime | None = None

    @classmethod
    def initial(cls, min_frequency: timedelta, max_frequency: timedelta) -> DigestState:
        """Idle at the minimum wait. As flowlord: a maximum not above the minimum is 16 times it."""
        top = max_frequency if max_frequency > min_frequency else 16 * min_frequency
        return cls(min_frequency, top, min_frequency)


def plan(
    state: DigestState, pending: Sequence[PendingAlert], now: datetime
) -> tuple[list[PendingAlert], DigestState]:
    """Which pending failures to send as a digest at ``now``, and the state after sending them.

    First, every wait that ended before the oldest pending failure was created (by its
    ``created_at``) was quiet, and halves the next wait; a quiet wait at the minimum makes the
    digest idle. Then: within a wait nothing is sent. When the wait has ended (or the digest is
    idle), everything pending is sent and a new wait begins at ``now``: doubled (up to the
    maximum) after a wait, since failures kept coming; unchanged from idle. The caller applies
    the new state only once the digest is delivered, so an undelivered one is planned again.
    """
    quiet_until = min((p.created_at for p in pending), default=now)
    state = _decay(state, min(quiet_until, now))
    if state.period_start is not None and now < state.period_start + state.wait:
        return [], state
    if not pending:
        return [], state
    grown = state.wait if state.period_start is None else min(state.wait * 2, state.max_wait)
    return list(pending), replace(state, wait=grown, period_start=now)


def _decay(state: DigestState, until: datetime) -> DigestState:
    """Apply the waits that ended by ``until`` without a failure: each halves the next."""
    while state.period_start is not None and state.period_start + state.wait <= until:
        if state.wait <= state.min_wait:
            return replace(state, wait=state.min_wait, period_start=None)
        start = state.period_start + state.wait
        state = replace(state, wait=max(state.wait / 2, state.min_wait), period_start=start)
    return state


# -- messages -----------------------------------------------------------------------------------


def alert_message(alert: PendingAlert) -> Payload:
    """One alert result: task, task time, execution id and its message."""
    when = _stamp(alert.task_time) if alert.task_time else "-"
    execution = str(alert.execution_id) if alert.execution_id is not None else "-"
    lines = [
        f"tomlflow alert: {alert.task}",
        f"task time: {when}  execution: {execution}  file: {alert.file_path}",
    ]
    if alert.msg:
        lines.append(alert.msg)
    return {"text": "\n".join(lines)}


def digest_message(alerts: Sequence[PendingAlert], what: str = "failures") -> Payload:
    """``N failures`` and one line per task: ``task  count  task-time ranges``."""
    by_task: dict[str, list[PendingAlert]] = defaultdict(list)
    for alert in alerts:
        by_task[alert.task].append(alert)
    lines = [
        f"{task:<35}{len(group):>5}  {time_ranges(a.task_time for a in group)}"
        for task, group in sorted(by_task.items())
    ]
    heading = f"tomlflow: {len(alerts)} {what}"
    return {"text": heading + "\n```\n" + "\n".join(lines) + "\n```"}


def time_ranges(times: Iterable[datetime | None]) -> str:
    """Task times as consecutive ranges: ``2024-01-02T13..2024-01-02T15, 2024-01-04T00``.

    Whole days print as days and step by a day; whole hours as hours, stepping by an hour;
    anything else prints each time on its own. Missing task times print as ``-``.
    """
    given = list(times)
    known = sorted({t for t in given if t is not None})
    parts = [_range_text(run, unit) for run, unit in _runs(known)]
    if len(parts) > MAX_RANGES:
        parts = [*parts[:MAX_RANGES], f"+{len(parts) - MAX_RANGES} more"]
    if None in given:
        parts.append("-")
    return ", ".join(parts)


def _runs(times: list[datetime]) -> list[tuple[list[datetime], str]]:
    if all(t.hour == t.minute == t.second == t.microsecond == 0 for t in times):
        unit, step = "day", timedelta(days=1)
    elif all(t.minute == t.second == t.microsecond == 0 for t in times):
        unit, step = "hour", timedelta(hours=1)
    else:
        return [([t], "second") for t in times]
    runs: list[list[datetime]] = []
    for t in times:
        if runs and t - runs[-1][-1] == step:
            runs[-1].append(t)
        else:
            runs.append([t])
    return [(run, unit) for run in runs]


def _range_text(run: list[datetime], unit: str) -> str:
    width = {"day": 10, "hour": 13, "second": 19}[unit]
    first, last = _stamp(run[0])[:width], _stamp(run[-1])[:width]
    return first if len(run) == 1 else f"{first}..{last}"


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the notifier -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Message:
    payload: Payload
    ids: list[int]
    digest: bool = False


class Notifier:
    """Posts unsent alerts to ``[alerts] webhook``; call ``poll(now)`` every scheduler tick."""

    def __init__(
        self,
        db: Database,
        config: AlertsConfig,
        *,
        check_every: timedelta = CHECK_EVERY,
        timeout: float = POST_TIMEOUT,
    ) -> None:
        self.db = db
        self.webhook = _usable(config.webhook)
        self.check_every = check_every
        self.timeout = timeout
        self.state = DigestState.initial(config.min_frequency, config.max_frequency)
        self._next_check: datetime | None = None
        self._failures = 0

    def poll(self, now: datetime) -> int:
        """Post what is due at ``now``; returns how many alerts were marked sent.

        Cheap when called often: it reads the store at most once per ``check_every``, and after
        a failed post not before the backoff has passed. Never raises: webhook and database
        failures are logged and tried again on a later call.
        """
        if not self.due(now):
            return 0
        self._next_check = now + self.check_every
        try:
            return self._deliver(now)
        except StoreError as exc:
            log.warning("alerts not delivered: %s", exc)
            return 0

    def due(self, now: datetime) -> bool:
        """Whether ``poll(now)`` would look for alerts (a webhook is set and its time has come)."""
        return bool(self.webhook) and (self._next_check is None or now >= self._next_check)

    def flush(self, now: datetime) -> int:
        """``poll`` without waiting for the check interval or backoff (e.g. before exiting).

        The digest policy still applies: failures within a wait stay for a later run.
        """
        self._next_check = None
        return self.poll(now)

    def _deliver(self, now: datetime) -> int:
        with self.db.read() as conn:
            pending = alerting.unsent(conn, BATCH)
        failures = [p for p in pending if p.kind == AlertKind.FAILED]
        messages = _immediate([p for p in pending if p.kind != AlertKind.FAILED])
        digest, after = plan(self.state, failures, now)
        if digest:
            messages.append(_Message(digest_message(digest), [d.id for d in digest], True))
        else:
            self.state = after  # the policy moved on without sending anything
        sent = self._post_all(messages, after, now)
        if sent:
            with self.db.write() as conn:
                alerting.mark_notified(conn, sent, now)
        return len(sent)

    def _post_all(self, messages: list[_Message], after: DigestState, now: datetime) -> list[int]:
        """Post in order, stopping at the first failure; returns the ids delivered."""
        sent: list[int] = []
        for message in messages:
            if not self._post(message.payload):
                self._failures += 1
                backoff = min(BACKOFF_FIRST * 2 ** (self._failures - 1), BACKOFF_MAX)
                self._next_check = now + backoff
                break
            self._failures = 0
            sent.extend(message.ids)
            if message.digest:
                self.state = after
        return sent

    def _post(self, payload: Payload) -> bool:
        assert self.webhook
        try:
            url, headers = _with_basic_auth(self.webhook)
            request = urllib.request.Request(
                url,
                data=json.dumps(payload).encode("utf-8"),
                headers={"Content-Type": "application/json", **headers},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # OSError covers URLError, HTTPError (non-2xx), refused connections and timeouts.
            # Errors may quote parts of the URL (http.client: "nonnumeric port: 'pw@host'").
            log.warning("alert webhook %s failed: %s", _where(self.webhook),
                        redact(str(exc), self.webhook))
            return False
        return True


class AlertThread:
    """Runs ``notifier``'s polls on one worker thread, one poll at a time.

    ``poll`` returns at once: when the notifier is due and no earlier poll is still posting, it
    hands the poll to the thread. ``flush`` (before exiting) waits for that poll and then flushes
    on the caller's thread. The thread exists only once something is due, so a scheduler
    without a webhook never starts it.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._pool: ThreadPoolExecutor | None = None
        self._posting: Future[int] | None = None

    def poll(self, now: datetime) -> None:
        if not self.notifier.due(now) or self._busy():
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tomlflow-alerts")
        self._posting = self._pool.submit(self.notifier.poll, now)

    def flush(self, now: datetime) -> int:
        """Wait for the poll in flight, then post what is due regardless of the check interval."""
        self._wait()
        return self.notifier.flush(now)

    def close(self) -> None:
        """Wait for the poll in flight (at most the post timeout per message) and end the thread."""
        self._wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _busy(self) -> bool:
        return self._posting is not None and not self._posting.done()

    def _wait(self) -> None:
        if self._posting is not None:
            self._posting.result()  # Notifier.poll never raises
            self._posting = None


def _immediate(alerts: list[PendingAlert]) -> list[_Message]:
    """One message per alert result; a burst larger than MAX_SINGLE goes out as one list."""
    if len(alerts) > MAX_SINGLE:
        return [_Message(digest_message(alerts, "alert results"), [a.id for a in alerts])]
    return [_Message(alert_message(a), [a.id]) for a in alerts]


def _usable(webhook: str) -> str:
    """The webhook if it is an http(s) URL; otherwise '' (with a warning when one was set)."""
    if webhook and _scheme(webhook) not in ("http", "https"):
        log.warning("[alerts] webhook is not an http(s) URL; alerts are only recorded")
        return ""
    return webhook


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme
    except ValueError:  # e.g. an unclosed '[': not a URL at all
        return ""


def _where(url: str) -> str:
    # A webhook URL carries its secret in the path, the query or user:password@: log only
    # where it points.
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _with_basic_auth(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without ``user:password@`` and the Authorization header that carries them
    (urllib would take them for part of the host)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, {}
    host = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}
