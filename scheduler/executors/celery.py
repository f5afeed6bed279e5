"""``CeleryExecutor``: the scheduler's end of running phases on Celery workers.

``submit`` stores the launch in Redis and sends it as one Celery task with a deterministic id.
One listener thread then follows every execution in flight through the backchannel
(``backchannel``): it wakes on the ``done`` list the moment a worker stores an outcome, and
every ``_SWEEP`` seconds it reads claims (start notices), heartbeats and new output lines. An
execution whose worker stopped beating for ``heartbeat_timeout`` ends as an ERROR here, and the
worker, should it wake up, is told to kill it.

Nothing here decides what runs: the engine does, from the database. Redis only carries what a
worker says back, and keeps it until the engine has recorded it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import redis

from scheduler.config import Config
from scheduler.durations import format_duration
from scheduler.errors import ExecutorError
from scheduler.executors import backchannel as bc
from scheduler.executors.base import (
    Clock,
    Launch,
    LogLine,
    Orphan,
    Outcome,
    Recovery,
    Result,
    Started,
)
from scheduler.executors.output import Caps
from scheduler.executors.worker import make_app

log = logging.getLogger(__name__)

_SWEEP = 0.25  # seconds between reads of claims, heartbeats and output lines
_DONE_BATCH = 500
_SEND_BATCH = 500


def _batched(producer: Any) -> AbstractContextManager[Any]:
    """The producer's publish batch where kombu has one (5.7+), else nothing."""
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else contextlib.nullcontext()


def queue_for(config: Config, topic: str, job: str) -> str:
    """The Celery queue of a phase: its ``[workers]`` table's ``queue``; else its topic when the
    configuration has a ``[workers."topic"]`` (or ``"topic:job"``) table; else ``default``."""
    worker = config.worker_for(topic, job)
    if worker is None:
        return bc.DEFAULT_QUEUE
    return worker.queue or topic


def python_target(config: Config, topic: str, job: str) -> str:
    worker = config.worker_for(topic, job)
    return worker.python if worker else ""


@dataclass
class _Flight:
    """What the listener knows of one execution in flight."""

    attempt: int
    claimed: bool = False
    beat: int | None = None
    beat_seen: float = 0.0  # monotonic time the beat last changed (or the claim was first seen)
    cursor: int = 0  # log batches already read
    seq: int = 0  # the highest line number handed out (a batch pushed twice is dropped)

    def fresh(self, lines: list[LogLine]) -> list[LogLine]:
        """The lines not handed out yet, noting them as handed out."""
        new = [x for x in lines if x.seq > self.seq]
        if new:
            self.seq = new[-1].seq
        return new


class _Sender:
    """Sends launch payloads on a thread of its own, in batches: one Redis round trip stores
    every payload of a batch (``sent:<id>``, for recovery), then the messages go out through one
    producer (pipelined where kombu can). ``on_error(batch, exc)`` hears of a batch that failed.
    """

    def __init__(
        self,
        app: Any,
        client: redis.Redis,
        keys: bc.Keys,
        on_error: Callable[[list[dict[str, Any]], Exception], None],
    ) -> None:
        self._app = app
        self._redis = client
        self._keys = keys
        self._on_error = on_error
        self._ready = threading.Condition()
        self._outbox: list[dict[str, Any]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="tomlflow-send", daemon=True)
        self._thread.start()

    def put(self, payload: dict[str, Any]) -> None:
        with self._ready:
            self._outbox.append(payload)
            self._ready.notify()

    def withdraw(self, execution_id: int) -> None:
        with self._ready:
            self._outbox = [p for p in self._outbox if p["execution_id"] != execution_id]

    def close(self) -> None:
        """Send what is queued, then end the thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._outbox) or self._closed)
                batch, self._outbox = self._outbox[:_SEND_BATCH], self._outbox[_SEND_BATCH:]
            if not batch:
                return  # closed and drained
            try:
                self._send(batch)
            except Exception as exc:  # broker or Redis down: the executor ends them as errors
                self._on_error(batch, exc)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for payload in batch:
            key = self._keys.sent(int(payload["execution_id"]))
            pipe.set(key, json.dumps(payload), ex=bc.KEEP_SECONDS)
        pipe.execute()
        with self._app.producer_or_acquire() as producer, _batched(producer):
            for payload in batch:
                eid, attempt = int(payload["execution_id"]), int(payload["attempt"])
                self._app.send_task(
                    bc.TASK_NAME,
                    args=[payload],
                    task_id=bc.task_id(self._keys.namespace, eid, attempt),
                    queue=str(payload["queue"]),
                    producer=producer,
                    argsrepr=f"execution {eid} attempt {attempt}",  # saferepr costs ~0.5 ms
                    kwargsrepr="",
                )


class CeleryExecutor:
    """Runs launches on Celery workers; see the module docstring. Thread-safe."""

    def __init__(
        self,
        config: Config,
        now: Clock,
        *,
        namespace: str | None = None,
        sweep: float = _SWEEP,
    ) -> None:
        settings = config.executor
        self._config = config
        self._now = now
        self._namespace = namespace or settings.namespace or bc.namespace_for(config.database)
        self._keys = bc.Keys(self._namespace)
        self._timeout = settings.heartbeat_timeout
        self._caps = Caps(config.output_max_lines, config.output_max_bytes, config.output_max_line)
        self._sweep = sweep
        self._broker = bc.redact(settings.broker)
        self._backchannel = settings.backchannel_url
        self._redis = redis.Redis.from_url(self._backchannel)
        self._app = make_app(settings.broker)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._flights: dict[int, _Flight] = {}
        self._done: list[Outcome] = []
        self._started: list[Started] = []
        self._lines: list[LogLine] = []
        self._closed = threading.Event()  # no more submits
        self._stop = threading.Event()  # the listener ends
        self._listener = threading.Thread(target=self._listen, name="tomlflow-celery", daemon=True)
        self._listener.start()
        self._sender = _Sender(self._app, self._redis, self._keys, self._unsent)

    @property
    def namespace(self) -> str:
        return self._namespace

    # -- the Executor interface ---------------------------------------------------------------

    def submit(self, launch: Launch) -> None:
        """Queue ``launch`` for the sender thread, which stores and sends it within moments."""
        eid = launch.execution_id
        queue = queue_for(self._config, launch.topic, launch.job)
        python = python_target(self._config, launch.topic, launch.job)
        payload = bc.launch_payload(launch, self._namespace, queue, self._caps, python)
        with self._lock:
            if self._closed.is_set():
                raise ExecutorError(f"executor is shut down; cannot run execution {eid}")
            if eid in self._flights:
                raise ExecutorError(f"execution {eid} is already in flight")
            self._flights[eid] = _Flight(launch.attempt)
        self._sender.put(payload)

    def collect(self, timeout: float | None = 0) -> list[Outcome]:
        with self._lock:
            if timeout is None or timeout > 0:
                ready = lambda: bool(self._done) or not self._flights  # noqa: E731
                self._changed.wait_for(ready, timeout)
            done, self._done = self._done, []
            return done

    def started(self) -> list[Started]:
        with self._lock:
            started, self._started = self._started, []
            return started

    def running(self) -> int:
        with self._lock:
            return len(self._flights)

    def lines(self) -> list[LogLine]:
        """Output lines of running executions read since the last call (live logs)."""
        with self._lock:
            lines, self._lines = self._lines, []
            return lines

    def cancel(self, execution_id: int, reason: str) -> None:
        """Cancel an execution: one no worker has claimed yet ends at once (its claim is taken
        so no worker ever runs it); a running one is killed by its worker, whole tree."""
        with self._lock:
            flight = self._flights.get(execution_id)
        if flight is None:
            return
        claim = json.dumps({"cancel": reason})
        key = self._keys.claim(execution_id, flight.attempt)
        if self._redis.set(key, claim, nx=True, ex=bc.KEEP_SECONDS):
            self._sender.withdraw(execution_id)  # if not sent yet, no need to send it at all
            at = self._now()
            self._publish(
                Outcome(execution_id, Result.CANCELLED, reason, None, {}, at, at, (), None)
            )
            return
        self._redis.set(self._keys.cancel(execution_id), reason, ex=bc.KEEP_SECONDS)

    def shutdown(self, grace: float) -> list[Outcome]:
        """Stop accepting, wait up to ``grace`` seconds for outcomes, then stop listening.

        Executions still running on workers are NOT cancelled: they run on, their outcomes
        wait in Redis, and the next scheduler adopts them (``recover``).
        """
        with self._lock:
            self._closed.set()
        self._sender.close()  # what was submitted is sent: the next start adopts it
        end = time.monotonic() + grace
        outcomes: list[Outcome] = []
        while self.running() and (left := end - time.monotonic()) > 0:
            outcomes += self.collect(left)
        self._stop.set()
        self._listener.join()
        outcomes += self.collect(0)
        left_running = self.running()
        if left_running:
            log.warning("%d executions left on workers; the next start adopts them", left_running)
        self._app.close()
        self._redis.close()
        return outcomes

    def release(self, execution_ids: Iterable[int]) -> None:
        """Delete what Redis keeps of executions whose outcomes are recorded. Claims and stop
        requests stay until they expire: a late redelivery must still meet the claim, and a
        worker that was only frozen must still find its stop request."""
        keys = [key for eid in execution_ids for key in self._keys.per_execution(eid)]
        if keys:
            self._redis.delete(*keys)

    def recover(self, orphans: Sequence[Orphan], local: bool) -> Recovery:
        """Settle what a stopped scheduler left running, from what Redis holds of each:

        - an outcome: it ended while no scheduler listened; recorded as it ended;
        - no payload: it was never sent, so nothing can have run it: queued again;
        - a payload but no claim: it waits in a queue, or its message was lost; sent again
          (same task id; the claim makes a second delivery harmless) and adopted;
        - a claim: adopted; followed by its heartbeat like any other.
        ``local`` does not matter here: workers are elsewhere either way.
        """
        recovery = Recovery()
        try:
            self._redis.ping()  # at start: an unreachable backchannel is one clear line
            if not orphans:
                return recovery
            pipe = self._redis.pipeline(transaction=False)
            for orphan in orphans:
                pipe.get(self._keys.sent(orphan.execution_id))
                pipe.get(self._keys.outcome(orphan.execution_id))
            replies = pipe.execute()
            for i, orphan in enumerate(orphans):
                self._settle(orphan.execution_id, replies[2 * i], replies[2 * i + 1], recovery)
        except redis.RedisError as exc:
            self.shutdown(0)  # unusable: let its threads go
            where = bc.redact(self._backchannel)
            raise ExecutorError(f"cannot reach Redis at {where}: {bc.redact(str(exc))}") from None
        return recovery

    def _settle(
        self, eid: int, sent: bytes | None, ended: bytes | None, recovery: Recovery
    ) -> None:
        if ended is not None:
            batches = self._redis.lrange(self._keys.logs(eid), 0, -1)
            outcome = bc.outcome_of(ended).outcome
            logs = _Flight(0).fresh(bc.lines_of(eid, batches))
            recovery.outcomes.append(replace(outcome, logs=tuple(logs)))
            recovery.reparsed.append(eid)
            return
        if sent is None:
            recovery.unstarted.append(eid)
            return
        payload = json.loads(sent)
        attempt = int(payload["attempt"])
        claim = self._redis.get(self._keys.claim(eid, attempt))
        cancelled = bc.claim_of(claim)[2] if claim is not None else ""
        if cancelled:  # cancelled before any worker took it; the end was not recorded
            at = self._now()
            recovery.outcomes.append(
                Outcome(eid, Result.CANCELLED, cancelled, None, {}, at, at, (), None)
            )
            return
        with self._lock:
            self._flights[eid] = _Flight(attempt)
        if claim is None:
            self._sender.put(payload)
        recovery.adopted.append(eid)
        recovery.reparsed.append(eid)
        log.info("adopted execution %d (%s)", eid, "claimed" if claim else "sent again")

    # -- sending ------------------------------------------------------------------------------

    def _unsent(self, batch: list[dict[str, Any]], exc: Exception) -> None:
        """End the launches of a batch that could not be sent as errors, unless a worker
        claimed one after all (then it runs and reports); taking the claim first makes sure
        a message that did get out never runs beside the retry."""
        msg = f"cannot send to the broker {self._broker}: {type(exc).__name__}"
        log.error("%s: %s", msg, bc.redact(str(exc)))
        for payload in batch:
            eid, attempt = int(payload["execution_id"]), int(payload["attempt"])
            claim, key = json.dumps({"cancel": msg}), self._keys.claim(eid, attempt)
            with contextlib.suppress(redis.RedisError):
                if not self._redis.set(key, claim, nx=True, ex=bc.KEEP_SECONDS):
                    continue
            at = self._now()
            self._publish(Outcome(eid, Result.ERROR, msg, None, {}, at, at, (), None))

    def _publish(self, outcome: Outcome, logs: Sequence[LogLine] = ()) -> None:
        """Hand ``outcome`` to ``collect``; a start notice first if none was given."""
        with self._lock:
            flight = self._flights.pop(outcome.execution_id, None)
            if flight is None:
                return  # already ended (a cancel, a lost worker) or never ours
            if logs:
                outcome = replace(outcome, logs=(*logs, *outcome.logs))
            if not flight.claimed:
                self._started.append((outcome.execution_id, None, outcome.started_at))
            self._done.append(outcome)
            self._changed.notify_all()

    # -- listening ----------------------------------------------------------------------------

    def _listen(self) -> None:
        next_sweep, down = 0.0, False
        while not self._stop.is_set():
            try:
                self._take_done(max(0.01, min(next_sweep - time.monotonic(), self._sweep)))
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self._sweep
                    self._sweep_flights()
                if down:
                    down = False
                    log.warning("backchannel reachable again")
            except redis.RedisError as exc:
                if not down:  # once per outage, not four times a second
                    down = True
                    log.warning("backchannel unreachable: %s", bc.redact(str(exc)))
                self._stop.wait(self._sweep)
            except Exception:  # a bug or a malformed entry must not end the listening for good
                log.exception("celery executor: listener failure")
                self._stop.wait(self._sweep)

    def _take_done(self, wait: float) -> None:
        item = self._redis.blpop([self._keys.done], timeout=wait)
        if item is None:
            return
        texts = [item[1]]
        more = self._redis.lpop(self._keys.done, _DONE_BATCH)
        if isinstance(more, list):
            texts += more
        for text in texts:
            self._ended(bc.outcome_of(text))

    def _ended(self, ended: bc.Ended) -> None:
        eid = ended.outcome.execution_id
        with self._lock:
            flight = self._flights.get(eid)
        if flight is None:
            return
        logs: list[LogLine] = []
        if ended.batches > flight.cursor:
            batches = self._redis.lrange(self._keys.logs(eid), flight.cursor, -1)
            logs = flight.fresh(bc.lines_of(eid, batches))
        self._publish(ended.outcome, logs)

    def _sweep_flights(self) -> None:
        """Read claims, heartbeats and new output of every execution in flight."""
        with self._lock:
            flights = list(self._flights.items())
        if not flights:
            return
        pipe = self._redis.pipeline(transaction=False)
        for eid, flight in flights:
            pipe.get(self._keys.claim(eid, flight.attempt))
            pipe.get(self._keys.beat(eid))
            pipe.lrange(self._keys.logs(eid), flight.cursor, -1)
        replies = pipe.execute()
        lost = []
        for i, (eid, flight) in enumerate(flights):
            claim, beat, batches = replies[3 * i : 3 * i + 3]
            if claim is not None and self._note(eid, flight, claim, beat, batches):
                lost.append(eid)
        for eid in lost:
            self._lose(eid)

    def _note(
        self, eid: int, flight: _Flight, claim: bytes, beat: bytes | None, batches: list[bytes]
    ) -> bool:
        """Take in one sweep's view of a claimed execution; True if its worker is lost."""
        worker, started_at, cancelled = bc.claim_of(claim)
        now = time.monotonic()
        with self._lock:
            if self._flights.get(eid) is not flight:
                return False
            if not flight.claimed and not cancelled:
                flight.claimed = True
                flight.beat_seen = now
                self._started.append((eid, None, started_at or self._now()))
                self._lines.append(LogLine(eid, 0, self._now(), "system", f"worker {worker}"))
            if batches:
                flight.cursor += len(batches)
                self._lines.extend(flight.fresh(bc.lines_of(eid, batches)))
            value = int(beat) if beat is not None else None
            if value != flight.beat:
                flight.beat, flight.beat_seen = value, now
            return flight.claimed and now - flight.beat_seen >= self._timeout.total_seconds()

    def _lose(self, eid: int) -> None:
        """Close ``eid`` whose worker stopped beating; tell the worker, should it wake, to stop."""
        text = self._redis.get(self._keys.outcome(eid))
        if text is not None:  # it ended just now after all
            self._ended(bc.outcome_of(text))
            return
        msg = f"worker lost: no heartbeat for {format_duration(self._timeout)}"
        self._redis.set(self._keys.cancel(eid), msg, ex=bc.KEEP_SECONDS)
        at = self._now()
        log.warning("execution %d: %s", eid, msg)
        self._publish(Outcome(eid, Result.ERROR, msg, None, {}, at, at, (), None))
