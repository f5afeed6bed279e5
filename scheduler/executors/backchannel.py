"""What the scheduler and its Celery workers say to each other, and where in Redis they say it.

The Celery message carries a launch (``launch_payload``); everything after that travels through
Redis keys named here, under a namespace that keeps two databases' executions apart:

- ``sent:<id>``      the payload, written before the message is sent (recovery re-sends it);
- ``claim:<id>:<n>`` SET NX by the worker that runs attempt ``n`` (or by a cancel that wins the
                     race): whoever holds it is the only one to act on the execution;
- ``beat:<id>``      a counter the worker bumps while the command runs;
- ``cancel:<id>``    a stop reason the worker polls (cancel, or "worker lost" from the scheduler);
- ``logs:<id>``      a list of JSON batches of output lines, in order (bounded by the output
                     caps the worker applies, as a local execution's are);
- ``outcome:<id>``   how it ended, kept until the scheduler has recorded it (``release``);
- ``done``           a list of finished execution ids, so the scheduler wakes at once.

Every key but ``done`` expires after ``KEEP``: a scheduler that never comes back leaves nothing
behind for ever, and a redelivery within that time still finds the claim.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scheduler.executors.base import Launch, LogLine, Outcome, Result
from scheduler.executors.output import Caps

TASK_NAME = "tomlflow.run_phase"
DEFAULT_QUEUE = "default"
KEEP = timedelta(days=7)
KEEP_SECONDS = int(KEEP.total_seconds())
PREFIX = "tomlflow"


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def namespace_for(database_url: str) -> str:
    """A short stable name for one database, from its URL without the password.

    Schedulers that share a database must reach it through the same URL (or set
    ``[executor] namespace``), so they see the same executions in Redis.
    """
    return hashlib.sha256(redact(database_url).encode()).hexdigest()[:12]


def task_id(namespace: str, execution_id: int, attempt: int) -> str:
    """The Celery task id of one attempt: the same launch always gets the same id."""
    return f"{PREFIX}-{namespace}-{execution_id}-{attempt}"


@dataclass(frozen=True)
class Keys:
    """The Redis key names of one namespace."""

    namespace: str

    def _key(self, *parts: object) -> str:
        return ":".join([PREFIX, self.namespace, *map(str, parts)])

    @property
    def done(self) -> str:
        return self._key("done")

    def sent(self, eid: int) -> str:
        return self._key("sent", eid)

    def claim(self, eid: int, attempt: int) -> str:
        return self._key("claim", eid, attempt)

    def beat(self, eid: int) -> str:
        return self._key("beat", eid)

    def cancel(self, eid: int) -> str:
        return self._key("cancel", eid)

    def logs(self, eid: int) -> str:
        return self._key("logs", eid)

    def outcome(self, eid: int) -> str:
        return self._key("outcome", eid)

    def per_execution(self, eid: int) -> list[str]:
        """The keys of ``eid`` to delete once its outcome is recorded: all but its claim (which
        must outlive it to stop a redelivery) and its stop request (which a frozen worker must
        still find when it wakes); those two expire on their own."""
        return [self.sent(eid), self.beat(eid), self.logs(eid), self.outcome(eid)]


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def launch_payload(
    launch: Launch, namespace: str, queue: str, caps: Caps, python: str = ""
) -> dict[str, Any]:
    """A JSON-serialisable form of ``launch``; ``caps`` are the scheduler's output caps, which
    the worker applies; ``python`` names a Python worker the worker imports and calls."""
    return {
        "ns": namespace,
        "queue": queue,
        "execution_id": launch.execution_id,
        "attempt": launch.attempt,
        "task_id": launch.task_id,
        "topic": launch.topic,
        "job": launch.job,
        "info": launch.info,
        "task_time": _iso(launch.task_time),
        "meta": dict(launch.meta),
        "command": launch.command if isinstance(launch.command, str) else list(launch.command),
        "shell": launch.shell,
        "cwd": launch.cwd,
        "env": dict(launch.env),
        "timeout": launch.timeout.total_seconds() if launch.timeout is not None else None,
        "python": python,
        "caps": [caps.lines, caps.bytes, caps.line],
    }


def launch_of(payload: Mapping[str, Any]) -> Launch:
    """The ``Launch`` a payload describes (without its Python callable, which the worker adds)."""
    task_time = payload["task_time"]
    timeout = payload["timeout"]
    return Launch(
        execution_id=int(payload["execution_id"]),
        task_id=str(payload["task_id"]),
        topic=str(payload["topic"]),
        job=str(payload["job"]),
        info=str(payload["info"]),
        task_time=_time(task_time) if task_time else None,
        attempt=int(payload["attempt"]),
        meta=dict(payload["meta"]),
        command=payload["command"],
        shell=bool(payload["shell"]),
        cwd=payload["cwd"],
        env=dict(payload["env"]),
        timeout=timedelta(seconds=timeout) if timeout is not None else None,
    )


def lines_json(lines: Sequence[LogLine]) -> str:
    """One batch of output lines for ``logs:<id>``."""
    return json.dumps([[x.seq, x.ts.isoformat(), x.stream, x.line] for x in lines])


def lines_of(execution_id: int, batches: Sequence[bytes | str]) -> list[LogLine]:
    """The lines of the batches read from ``logs:<id>``, in order."""
    lines = []
    for batch in batches:
        for seq, ts, stream, line in json.loads(batch):
            lines.append(LogLine(execution_id, int(seq), _time(ts), str(stream), str(line)))
    return lines


def outcome_json(outcome: Outcome, batches: int, worker: str) -> str:
    """How an execution ended, for ``outcome:<id>``; ``batches``: how many log batches it pushed
    in all, so the reader knows whether any are still unread."""
    return json.dumps(
        {
            "execution_id": outcome.execution_id,
            "result": outcome.result.value,
            "msg": outcome.msg,
            "exit_code": outcome.exit_code,
            "meta": dict(outcome.meta),
            "started_at": outcome.started_at.isoformat(),
            "ended_at": outcome.ended_at.isoformat(),
            "batches": batches,
            "worker": worker,
        }
    )


@dataclass(frozen=True)
class Ended:
    """An outcome as read back from Redis, before its last output lines are attached."""

    outcome: Outcome
    batches: int
    worker: str


def outcome_of(text: bytes | str) -> Ended:
    data = json.loads(text)
    outcome = Outcome(
        execution_id=int(data["execution_id"]),
        result=Result(data["result"]),
        msg=str(data["msg"]),
        exit_code=data["exit_code"],
        meta={str(k): str(v) for k, v in data["meta"].items()},
        started_at=_time(data["started_at"]),
        ended_at=_time(data["ended_at"]),
        logs=(),
        pid=None,  # a pid on another host means nothing here
    )
    return Ended(outcome, int(data["batches"]), str(data["worker"]))


def claim_json(worker: str, at: datetime) -> str:
    return json.dumps({"worker": worker, "at": at.isoformat()})


def claim_of(text: bytes | str) -> tuple[str, datetime | None, str]:
    """``(worker, started_at, cancel_reason)`` of a claim: a cancel's claim names no worker."""
    data = json.loads(text)
    at = data.get("at")
    return str(data.get("worker", "")), _time(at) if at else None, str(data.get("cancel", ""))
