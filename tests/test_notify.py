"""Alerts: the digest policy with explicit times, the messages, and the notifier against a real
HTTP server on 127.0.0.1 that records what it is sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.config import AlertsConfig
from scheduler.notify import (
    BACKOFF_FIRST,
    AlertThread,
    DigestState,
    Notifier,
    alert_message,
    digest_message,
    plan,
    time_ranges,
)
from scheduler.store import history
from scheduler.store.alerting import PendingAlert
from scheduler.store.db import Database
from scheduler.store.history import NewAlert
from scheduler.store.schema import alerts

T0 = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=5)
MAX = timedelta(minutes=80)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pending(created: float, task: str = "etl:load", n: int = 1) -> list[PendingAlert]:
    return [
        PendingAlert(
            id=i,
            execution_id=100 + i,
            task_id="chain",
            file_path="etl.toml",
            task=task,
            task_time=datetime(2024, 1, 2, 10, tzinfo=UTC),
            kind="failed",
            msg="boom",
            created_at=at(created),
        )
        for i in range(n)
    ]


# -- the policy ---------------------------------------------------------------------------------


def test_initial_state_is_idle_at_min_and_max_defaults_to_16_times_min() -> None:
    state = DigestState.initial(MIN, MIN)
    assert (state.wait, state.max_wait, state.period_start) == (MIN, 16 * MIN, None)
    assert DigestState.initial(MIN, MAX).max_wait == MAX


def run_policy(events: list[tuple[float, bool]]) -> list[tuple[float, bool, float]]:
    """Drive ``plan`` through (minute, a failure arrives just before it) events; return
    (minute, sent, wait in minutes after) for each call. Sent failures leave the pending list."""
    state = DigestState.initial(MIN, MAX)
    waiting: list[PendingAlert] = []
    out = []
    for minute, arrives in events:
        if arrives:
            waiting.extend(pending(minute))
        sent, state = plan(state, waiting, at(minute))
        if sent:
            waiting = []
        out.append((minute, bool(sent), state.wait / timedelta(minutes=1)))
    return out


# fmt: off
POLICY_CASES = [
    pytest.param(
        [(0, True)],
        [(0, True, 5)],
        id="idle: the first failure goes out at once, wait stays at min",
    ),
    pytest.param(
        [(0, True), (2, True), (4.9, False), (5, False)],
        [(0, True, 5), (2, False, 5), (4.9, False, 5), (5, True, 10)],
        id="a failure within the wait is held until it ends, then the wait doubles",
    ),
    pytest.param(
        [(0, True), (1, True), (5, False), (6, True), (15, False), (16, True), (35, False)],
        [(0, True, 5), (1, False, 5), (5, True, 10), (6, False, 10), (15, True, 20),
         (16, False, 20), (35, True, 40)],
        id="failures that keep coming double the wait each period",
    ),
    pytest.param(
        [(0, True), (1, True), (5, False), (6, True), (15, False), (16, True), (35, False),
         (36, True), (75, False), (76, True), (155, False), (156, True), (236, False)],
        [(0, True, 5), (1, False, 5), (5, True, 10), (6, False, 10), (15, True, 20),
         (16, False, 20), (35, True, 40), (36, False, 40), (75, True, 80), (76, False, 80),
         (155, True, 80), (156, False, 80), (236, True, 80)],
        id="the wait is capped at max_frequency",
    ),
    pytest.param(
        [(0, True), (1, True), (5, False), (6, True), (15, False), (35, False), (45, False),
         (50, False), (56, True)],
        [(0, True, 5), (1, False, 5), (5, True, 10), (6, False, 10), (15, True, 20),
         (35, False, 10), (45, False, 5), (50, False, 5), (56, True, 5)],
        id="quiet periods halve the wait back to min, then idle: next failure at once",
    ),
    pytest.param(
        [(0, True), (1, True), (5, False), (6, True), (15, False), (500, True)],
        [(0, True, 5), (1, False, 5), (5, True, 10), (6, False, 10), (15, True, 20),
         (500, True, 5)],
        id="a long silence unseen by any call still decays the wait (from created_at)",
    ),
]
# fmt: on


@pytest.mark.parametrize(("events", "expected"), POLICY_CASES)
def test_digest_policy(
    events: list[tuple[float, bool]], expected: list[tuple[float, bool, float]]
) -> None:
    assert run_policy(events) == expected


def test_failure_during_a_halved_period_waits_for_its_end() -> None:
    # Given a wait of 20 minutes that began at minute 15 and passed quietly
    state = DigestState(MIN, MAX, timedelta(minutes=20), at(15))
    # When a failure arrives at minute 40 (the halved 10-minute period began at 35)
    sent, after = plan(state, pending(40), at(40))
    # Then it is held until that period ends at 45, where the wait doubles again
    assert sent == [] and after.period_start == at(35) and after.wait == timedelta(minutes=10)
    sent, after = plan(after, pending(40), at(45))
    assert len(sent) == 1 and after.wait == timedelta(minutes=20)


# -- messages -----------------------------------------------------------------------------------


def test_alert_message_names_task_time_execution_and_msg() -> None:
    alert = PendingAlert(
        7, 42, "c", "sub/etl.toml", "etl:load", datetime(2024, 1, 2, 13, tzinfo=UTC), "alert",
        "disk full", T0,
    )  # fmt: skip
    text = alert_message(alert)["text"]
    assert text.splitlines() == [
        "tomlflow alert: etl:load",
        "task time: 2024-01-02T13:00:00Z  execution: 42  file: sub/etl.toml",
        "disk full",
    ]


def H(day: int, hour: int) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([H(2, 13)], "2024-01-02T13"),
        ([H(2, 15), H(2, 13), H(2, 14), H(2, 14)], "2024-01-02T13..2024-01-02T15"),
        ([H(2, 13), H(2, 14), H(2, 17)], "2024-01-02T13..2024-01-02T14, 2024-01-02T17"),
        ([H(2, 0), H(3, 0), H(4, 0), H(9, 0)], "2024-01-02..2024-01-04, 2024-01-09"),
        ([H(2, 23), H(3, 0)], "2024-01-02T23..2024-01-03T00"),
        ([H(2, 13) + timedelta(minutes=5)], "2024-01-02T13:05:00"),
        ([H(2, 0), None], "2024-01-02, -"),
        (
            [H(d, 0) for d in range(1, 30, 2)],
            "2024-01-01, 2024-01-03, 2024-01-05, 2024-01-07, 2024-01-09, 2024-01-11, +9 more",
        ),
    ],
)
def test_time_ranges(times: list[datetime | None], expected: str) -> None:
    assert time_ranges(times) == expected


def test_digest_has_one_line_per_task_with_count_and_ranges() -> None:
    group = pending(0, "etl:load", 3)
    group = [
        PendingAlert(a.id, a.execution_id, a.task_id, a.file_path, a.task, H(2, 10 + i),
                     a.kind, a.msg, a.created_at)
        for i, a in enumerate(group)
    ]  # fmt: skip
    text = digest_message([*group, *pending(0, "report", 1)])["text"]
    lines = text.splitlines()
    assert lines[0] == "tomlflow: 4 failures"
    assert lines[2:4] == [
        f"{'etl:load':<35}{3:>5}  2024-01-02T10..2024-01-02T12",
        f"{'report':<35}{1:>5}  2024-01-02T10",
    ]


# -- the notifier against a real HTTP server --------------------------------------------------


@dataclass
class Hook:
    """A webhook on 127.0.0.1 that records JSON bodies and answers ``status``."""

    port: int = 0
    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    received: threading.Event = field(default_factory=threading.Event)  # a post came in
    hold: threading.Event | None = None  # when set up, the answer waits until it is set

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/secret"

    def start(self) -> None:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                hook.received.set()
                if hook.hold is not None:
                    hook.hold.wait(10)
                if hook.status == 200:
                    hook.bodies.append(body)
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def texts(self) -> list[str]:
        return [body["text"] for body in self.bodies]


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    server.start()
    yield server
    if server.server is not None:
        server.stop()


def add_alert(db: Database, kind: str, now: datetime, task: str = "etl:load") -> None:
    with db.write() as conn:
        history.insert_alerts(
            conn,
            [NewAlert(9, "chain", "etl.toml", task, datetime(2024, 1, 2, 10, tzinfo=UTC), kind,
                      f"{kind} msg")],
            now,
        )  # fmt: skip


def unsent_count(db: Database) -> int:
    with db.read() as conn:
        return len(conn.execute(select(alerts.c.id).where(alerts.c.notified_at.is_(None))).all())


def notifier(db: Database, url: str) -> Notifier:
    config = AlertsConfig(webhook=url, min_frequency=MIN, max_frequency=MAX)
    return Notifier(db, config, timeout=2.0)


def test_alert_result_is_posted_at_once_and_marked_sent(db: Database, hook: Hook) -> None:
    add_alert(db, "alert", T0)
    sent = notifier(db, hook.url).poll(T0)
    assert sent == 1 and unsent_count(db) == 0
    assert hook.texts()[0].startswith("tomlflow alert: etl:load")
    assert "alert msg" in hook.texts()[0]


def test_failures_are_digested_per_the_policy(db: Database, hook: Hook) -> None:
    notes = notifier(db, hook.url)
    # Given a first failure: sent at once, as a digest of one
    add_alert(db, "failed", at(0))
    notes.poll(at(0))
    line = f"{'etl:load':<35}{1:>5}  2024-01-02T10"
    assert hook.texts() == [f"tomlflow: 1 failures\n```\n{line}\n```"]
    # When two more fail within the 5-minute wait, nothing goes out until it ends
    add_alert(db, "failed", at(1))
    add_alert(db, "failed", at(2), task="report")
    notes.poll(at(2))
    notes.poll(at(4))
    assert len(hook.bodies) == 1 and unsent_count(db) == 2
    # Then at minute 5 both go out in one digest, and the wait doubles to 10
    notes.poll(at(5))
    assert len(hook.bodies) == 2 and unsent_count(db) == 0
    assert hook.texts()[1].startswith("tomlflow: 2 failures")
    add_alert(db, "failed", at(6))
    notes.poll(at(14))
    assert len(hook.bodies) == 2
    notes.poll(at(15))
    assert len(hook.bodies) == 3


def test_store_is_read_at_most_every_check_interval(db: Database, hook: Hook) -> None:
    notes = notifier(db, hook.url)
    assert notes.poll(T0) == 0
    add_alert(db, "alert", T0)
    assert notes.poll(T0 + timedelta(seconds=1)) == 0  # within the check interval
    assert notes.poll(T0 + timedelta(seconds=5)) == 1


def test_webhook_returning_500_keeps_alerts_then_sends_them_after_backoff(
    db: Database, hook: Hook
) -> None:
    notes = notifier(db, hook.url)
    add_alert(db, "alert", T0)
    add_alert(db, "failed", T0)
    hook.status = 500
    # When the webhook fails: no exception, nothing marked sent
    assert notes.poll(T0) == 0 and unsent_count(db) == 2
    hook.status = 200
    # Then no retry before the backoff, and both go out after it
    assert notes.poll(T0 + BACKOFF_FIRST - timedelta(seconds=1)) == 0 and hook.bodies == []
    assert notes.poll(T0 + BACKOFF_FIRST) == 2 and unsent_count(db) == 0
    assert [t.splitlines()[0] for t in hook.texts()] == [
        "tomlflow alert: etl:load",
        "tomlflow: 1 failures",
    ]


def test_webhook_refusing_connections_then_back(db: Database, hook: Hook) -> None:
    url = hook.url
    hook.stop()  # nothing listens on the port now: connections are refused
    notes = notifier(db, url)
    add_alert(db, "failed", T0)
    assert notes.poll(T0) == 0 and unsent_count(db) == 1
    later = T0 + BACKOFF_FIRST
    assert notes.poll(later) == 0  # still down: backoff doubles
    assert notes.poll(later + BACKOFF_FIRST) == 0  # within the doubled backoff: not even tried
    hook.start()  # the same port again
    assert notes.poll(later + 2 * BACKOFF_FIRST) == 1 and unsent_count(db) == 0
    assert hook.texts()[0].startswith("tomlflow: 1 failures")


def test_without_webhook_nothing_is_posted_and_alerts_stay(db: Database, hook: Hook) -> None:
    add_alert(db, "alert", T0)
    config = AlertsConfig(webhook="")
    assert Notifier(db, config).poll(T0) == 0
    assert unsent_count(db) == 1 and hook.bodies == []


def test_a_burst_of_alert_results_goes_out_as_one_message(db: Database, hook: Hook) -> None:
    for i in range(12):
        add_alert(db, "alert", T0, task=f"t{i:02d}")
    assert notifier(db, hook.url).flush(T0) == 12
    assert len(hook.bodies) == 1
    assert hook.texts()[0].startswith("tomlflow: 12 alert results")


def test_flush_ignores_the_check_interval(db: Database, hook: Hook) -> None:
    notes = notifier(db, hook.url)
    notes.poll(T0)
    add_alert(db, "alert", T0)
    assert notes.flush(T0) == 1


def test_alert_thread_returns_while_the_webhook_is_still_answering(
    db: Database, hook: Hook
) -> None:
    # Given a webhook that holds its answer until told
    hook.hold = threading.Event()
    add_alert(db, "alert", T0)
    posting = AlertThread(notifier(db, hook.url))
    # When the scheduler polls: the post reaches the webhook, and poll has already returned
    posting.poll(T0)
    assert hook.received.wait(5)
    assert unsent_count(db) == 1
    # A poll due while that post is in flight starts no second one
    posting.poll(T0 + 2 * BACKOFF_FIRST)
    # Then once the webhook answers, the alert is marked sent, posted once
    hook.hold.set()
    posting.close()
    assert unsent_count(db) == 0 and len(hook.bodies) == 1


def test_alert_thread_flush_waits_for_the_post_in_flight(db: Database, hook: Hook) -> None:
    add_alert(db, "alert", T0)
    posting = AlertThread(notifier(db, hook.url))
    posting.poll(T0)
    assert hook.received.wait(5)  # the first post has read its alerts: the next one is new
    add_alert(db, "alert", T0, task="report")
    # flush sends what came after, whatever the check interval, once the first post is done
    assert posting.flush(T0) == 1
    assert unsent_count(db) == 0 and len(hook.bodies) == 2
    posting.close()


def test_alert_thread_without_webhook_starts_no_thread(db: Database) -> None:
    posting = AlertThread(Notifier(db, AlertsConfig(webhook="")))
    before = threading.active_count()
    posting.poll(T0)
    assert threading.active_count() == before and posting.flush(T0) == 0
    posting.close()
