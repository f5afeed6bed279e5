"""The Celery side: the app both ends share, and the task that runs one phase on a worker host.

A worker needs no database. For each message it takes the execution's claim (``SET NX``): a
message delivered twice (a redelivery after the visibility timeout, a re-send after a scheduler
crash) finds the claim taken and runs nothing. While the command runs, one monitor thread per
worker process bumps each execution's heartbeat, pushes its new output lines and looks for a
stop request; at the end the outcome is written to Redis, where it stays until the scheduler has
recorded it. The command itself runs through ``command.run_command``, exactly as a local one.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.exceptions import Reject
from celery.signals import worker_ready

from scheduler.clock import SystemClock
from scheduler.config import Config
from scheduler.executors import backchannel as bc
from scheduler.executors.base import Launch, LogLine, Outcome, Result, make_outcome
from scheduler.executors.command import DEFAULT_KILL_GRACE, Run, Waker, run_command
from scheduler.executors.inprocess import call_python
from scheduler.executors.output import Caps
from scheduler.executors.spool import Spool

log = logging.getLogger(__name__)

READY = "tomlflow worker ready"
BEAT_EVERY = 1.0  # seconds between heartbeats, output pushes and stop checks
_BACKCHANNEL_RETRY = 1.0  # pause before handing a message back when Redis cannot be reached
_REPORT_TRIES = 10  # an outcome is retried this many times, _BACKCHANNEL_RETRY apart


def make_app(broker: str) -> Celery:
    """The Celery app of tomlflow, as the scheduler (sending) and the workers (running) use it.

    - ``acks_late`` with prefetch 1: a message is acknowledged only after its phase ran, and a
      worker holds one message per free slot, so a worker that dies loses no queued work;
    - ``task_reject_on_worker_lost`` off: a lost worker's message is not requeued at once; the
      scheduler closes the execution after the heartbeat timeout and its retry policy decides
      (a requeue could only meet the claim and run nothing);
    - no result backend: outcomes travel through the backchannel, which the scheduler releases
      only once they are recorded.
    """
    app = Celery("tomlflow", broker=broker, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_default_queue=bc.DEFAULT_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # A broker that is down must not stall the scheduler's tick for long.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )
    return app


@dataclass
class _Active:
    """One execution running on this worker, as the monitor sees it."""

    keys: bc.Keys
    execution_id: int
    run: Run | None = None
    batches: int = 0  # log batches pushed so far
    pending: list[LogLine] = field(default_factory=list)  # taken, not pushed yet


class Monitor:
    """Heartbeats, output pushes and stop checks for every execution running in this process,
    in one Redis round trip per beat."""

    def __init__(self, client: redis.Redis, every: float = BEAT_EVERY) -> None:
        self._redis = client
        self._every = every
        self._lock = threading.Lock()
        self._active: dict[int, _Active] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tomlflow-monitor", daemon=True)
        self._thread.start()

    def add(self, active: _Active) -> None:
        with self._lock:
            self._active[active.execution_id] = active

    def finish(self, active: _Active, outcome: Outcome, worker: str) -> None:
        """Stop watching ``active`` and store its last output and its outcome, in one step."""
        with self._lock:  # so no beat pushes a batch of it after the outcome
            self._active.pop(active.execution_id, None)
        for attempt in range(_REPORT_TRIES):
            try:
                _report(self._redis, active, outcome, worker)
                return
            except redis.RedisError as exc:
                log.warning(
                    "cannot store outcome of %d (try %d): %s", active.execution_id, attempt + 1, exc
                )
                time.sleep(_BACKCHANNEL_RETRY)
        # The scheduler will close it as a lost worker once the heartbeat timeout passes.
        log.error("outcome of execution %d lost: backchannel unreachable", active.execution_id)

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._closed.wait(self._every):
            try:
                self.beat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)

    def beat(self) -> None:
        """One heartbeat for every running execution, with its new output; then act on the
        stop requests found. Output is pushed under the lock only, so batches stay in order."""
        with self._lock:
            actives = list(self._active.values())
            if not actives:
                return
            pipe = self._redis.pipeline(transaction=False)
            for active in actives:
                self._queue_beat(pipe, active)
            for active in actives:  # last, so their replies are the last ones
                pipe.get(active.keys.cancel(active.execution_id))
            replies = pipe.execute()
            for active in actives:
                if active.pending:
                    active.pending, active.batches = [], active.batches + 1
        for active, reason in zip(actives, replies[-len(actives) :], strict=True):
            if reason is not None and active.run is not None:
                active.run.stop(Result.CANCELLED, _text(reason))

    @staticmethod
    def _queue_beat(pipe: Any, active: _Active) -> None:
        keys, eid = active.keys, active.execution_id
        pipe.incr(keys.beat(eid))
        pipe.expire(keys.beat(eid), bc.KEEP_SECONDS)
        output = active.run.output if active.run else None
        active.pending += output.take() if output else []
        if active.pending:  # kept until pushed: a failed beat loses no line
            pipe.rpush(keys.logs(eid), bc.lines_json(active.pending))
            pipe.expire(keys.logs(eid), bc.KEEP_SECONDS)


def _report(client: redis.Redis, active: _Active, outcome: Outcome, worker: str) -> None:
    keys, eid = active.keys, active.execution_id
    lines = [*active.pending, *outcome.logs]
    batches = active.batches + (1 if lines else 0)
    text = bc.outcome_json(outcome, batches, worker)
    # In order on one connection, so `done` never precedes the outcome and its lines; no
    # MULTI needed: a worker dying halfway leaves at worst an outcome without its notice,
    # which the scheduler finds when the heartbeat stops.
    pipe = client.pipeline(transaction=False)
    if lines:
        pipe.rpush(keys.logs(eid), bc.lines_json(lines))
        pipe.expire(keys.logs(eid), bc.KEEP_SECONDS)
    pipe.set(keys.outcome(eid), text, ex=bc.KEEP_SECONDS)
    pipe.lpush(keys.done, text)
    pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class PhaseRunner:
    """Runs the phases of the messages this worker process receives (thread-safe).

    Each namespace (scheduler database) gets a spool folder of its own under ``spool``, so two
    databases' execution ids never meet; an execution's files go once its outcome is stored.
    """

    def __init__(self, client: redis.Redis, spool: Path, name: str | None = None) -> None:
        self._redis = client
        self._spool_root = spool
        self._spools: dict[str, Spool] = {}
        self._clock = SystemClock()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.monitor = Monitor(client)

    def run(self, payload: Mapping[str, Any]) -> str:
        """Run the payload's command unless another delivery already claimed it.

        Returns what happened (``ran``, ``duplicate``, ``cancelled``). Raises Celery's Reject
        (requeue) when the backchannel cannot be reached before the claim: nothing ran yet.
        """
        keys = bc.Keys(str(payload["ns"]))
        eid, attempt = int(payload["execution_id"]), int(payload["attempt"])
        started_at = self._clock.now()
        try:
            claimed, reason = self._claim(keys, eid, attempt, started_at)
        except redis.RedisError as exc:
            log.warning("backchannel unreachable, message handed back: %s", exc)
            time.sleep(_BACKCHANNEL_RETRY)
            raise Reject(str(exc), requeue=True) from exc
        if not claimed:
            log.warning("execution %d attempt %d already claimed: not run again", eid, attempt)
            return "duplicate"
        active = _Active(keys, eid)
        if reason is not None:  # cancelled while it waited in the queue
            outcome = make_outcome(eid, Result.CANCELLED, reason, started_at, started_at)
            self.monitor.finish(active, outcome, self.name)
            return "cancelled"
        spool = self._spool(keys.namespace)
        outcome = self._execute(bc.launch_of(payload), payload, active, spool)
        self.monitor.finish(active, outcome, self.name)
        spool.release([eid])
        return "ran"

    def _claim(
        self, keys: bc.Keys, eid: int, attempt: int, at: datetime
    ) -> tuple[bool, str | None]:
        """Take the claim; also read a stop request left while it waited (one round trip).
        The first heartbeat comes from the monitor; until then the claim stands for it."""
        pipe = self._redis.pipeline(transaction=False)  # one connection: in order anyway
        claim = bc.claim_json(self.name, at)
        pipe.set(keys.claim(eid, attempt), claim, nx=True, ex=bc.KEEP_SECONDS)
        pipe.get(keys.cancel(eid))
        claimed, reason = pipe.execute()
        return bool(claimed), _text(reason) if reason is not None else None

    def _spool(self, namespace: str) -> Spool:
        if namespace not in self._spools:
            self._spools[namespace] = Spool(self._spool_root / namespace)
        return self._spools[namespace]

    def _execute(
        self, launch: Launch, payload: Mapping[str, Any], active: _Active, spool: Spool
    ) -> Outcome:
        eid, started_at = launch.execution_id, self._clock.now()
        try:
            python = str(payload.get("python") or "")
            if python:
                from scheduler.dispatcher import python_worker  # only workers that need it

                result, msg, meta = call_python(replace(launch, callable=python_worker(python)))
                return make_outcome(eid, result, msg, started_at, self._clock.now(), meta=meta)
            waker = Waker()
            try:
                active.run = Run(eid, spool, waker.wake_w, DEFAULT_KILL_GRACE)
                self.monitor.add(active)
                caps = Caps(*payload["caps"])
                return run_command(
                    launch, active.run, spool, waker, self._clock.now, caps, _ignore_start
                )
            finally:
                waker.close()
        except Exception as exc:  # a bug or a bad payload must still end the execution
            log.exception("worker failure on execution %d", eid)
            msg = f"worker failure: {type(exc).__name__}: {exc}"
            return make_outcome(eid, Result.ERROR, msg, started_at, self._clock.now())

    def close(self) -> None:
        self.monitor.close()


def _ignore_start(_pid: int | None, _at: datetime) -> None:
    """The claim already told the scheduler when the execution started."""


def register(app: Celery, runner: PhaseRunner) -> None:
    """Make ``app`` run phases through ``runner``."""

    @app.task(name=bc.TASK_NAME, bind=True)  # type: ignore[untyped-decorator]
    def run_phase(self: Any, payload: dict[str, Any]) -> str:
        return runner.run(payload)


def serve(config: Config, queues: Sequence[str], concurrency: int, verbose: int) -> int:
    """Run a Celery worker for ``queues`` until it is told to stop; returns its exit code.

    Receipts go to ``<spool>/worker/<namespace>/`` (``[scheduler] spool``)."""
    app = make_app(config.executor.broker)
    client = redis.Redis.from_url(config.executor.backchannel_url)
    runner = PhaseRunner(client, config.spool_dir / "worker")
    register(app, runner)
    level = ("WARNING", "INFO", "DEBUG")[min(verbose, 2)]
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        f"--queues={','.join(queues)}",
        f"--hostname=tomlflow-{os.getpid()}@%h",
        f"--loglevel={level}",
        # Gossip, mingle and worker heartbeats cost broker traffic we do not use.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    # Said at any log level: scripts and tests wait for this line.
    worker_ready.connect(lambda **_: print(READY, file=sys.stderr, flush=True), weak=False)
    try:
        app.worker_main(argv)
    finally:
        runner.close()
        client.close()
    return 0
