"""Phases on Celery workers, for real: a private redis-server, real ``tomlflow worker`` processes,
and the scheduler as a real process (or its executor in this process).

Skipped, saying why, when no ``redis-server`` binary is installed (``.ci/packages`` installs one).
Every test uses queue names of its own, so a message one test leaves behind reaches no other.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler.store.db import Database
from scheduler.store.schema import execution_logs
from scheduler.tasktime import iso
from tests import conftest
from tests.conftest import make_site

PY = sys.executable
REDIS = shutil.which("redis-server")
if REDIS is None:
    pytest.skip(
        "Celery integration tests SKIPPED: no redis-server binary (apt-get install redis-server, "
        "or run .ci/packages)",
        allow_module_level=True,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free port for this module, without persistence."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    assert REDIS is not None
    server = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    wait_for(lambda: _pings(client), timeout=10)
    client.close()
    yield url
    server.terminate()
    server.wait(timeout=10)


def _pings(client: Any) -> bool:
    """the redis server answers"""
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False



wait_for = partial(conftest.wait_for, timeout=20.0)  # a worker's start is slow under load


Workers = Callable[..., subprocess.Popen[bytes]]


def start_worker(config: Path, log: Path, name: str, queues: str, concurrency: int) -> Any:
    """A ``tomlflow worker`` for ``queues``, named by $WORKER_NAME in its commands' env, once
    it says it is ready."""
    env = {**os.environ, "WORKER_NAME": name}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PY, "-m", "scheduler", "worker", "--config", str(config),
             "--queues", queues, "--concurrency", str(concurrency)],
            cwd=config.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        """the worker says it is ready"""
        assert proc.poll() is None, log.read_text()
        return "tomlflow worker ready" in log.read_text()

    wait_for(ready)
    return proc


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Start workers of this test's own (stopped at its end)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(config: Path, name: str, queues: str, concurrency: int = 2) -> Any:
        proc = start_worker(config, tmp_path / f"worker-{name}.log", name, queues, concurrency)
        started.append(proc)
        return proc

    yield start
    stop_workers(started)


@pytest.fixture(scope="module")
def pool(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One worker for the tests that drive the executor directly, reading queues dup, stop and
    live with three slots; yields its log file."""
    folder = tmp_path_factory.mktemp("pool")
    config = folder / "tomlflow.toml"
    config.write_text(f'[executor]\nkind = "celery"\nbroker = "{redis_url}"\n')
    log = folder / "worker.log"
    proc = start_worker(config, log, "pool", "dup,stop,live", 3)
    yield log
    stop_workers([proc])


def celery_site(root: Path, redis_url: str, workflow: str, settings: str = "") -> Path:
    settings = (
        f'max_workers = 8\nrefresh = "1h"\nshutdown_grace = "1s"\n'
        f'[executor]\nkind = "celery"\nbroker = "{redis_url}"\n{settings}'
    )
    return make_site(root, {"w.toml": workflow}, settings) / "tomlflow.toml"


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return conftest.site_cli(config.parent, *args)


def rows(config: Path) -> list[Any]:
    return conftest.site_rows(config.parent)


def logs(config: Path, execution_id: int) -> list[str]:
    db = Database(f"sqlite:///{config.parent / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            query = select(execution_logs.c.line).where(
                execution_logs.c.execution_id == execution_id
            )
            return list(conn.execute(query.order_by(execution_logs.c.seq)).scalars())
    finally:
        db.close()


def stored_outcomes(config: Path, redis_url: str) -> list[bytes]:
    """the outcomes workers stored for a site, not yet recorded by its scheduler"""
    import redis

    from scheduler.config import load_config
    from scheduler.executors import backchannel as bc

    namespace = bc.namespace_for(load_config(str(config)).database)
    client = redis.Redis.from_url(redis_url)
    try:
        return list(client.keys(f"{bc.PREFIX}:{namespace}:outcome:*"))
    finally:
        client.close()


def sent_payload(config: Path, redis_url: str, execution_id: int) -> Any:
    """the launch payload the scheduler stored for an execution in flight"""
    import json

    import redis

    from scheduler.config import load_config
    from scheduler.executors import backchannel as bc

    keys = bc.Keys(bc.namespace_for(load_config(str(config)).database))
    client = redis.Redis.from_url(redis_url)
    try:
        return json.loads(client.get(keys.sent(execution_id)))
    finally:
        client.close()


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# A command that notes where it ran (topic, attempt, worker) in the site's runs.txt.
NOTE = "sh -c 'echo $TOMLFLOW_TOPIC:$TOMLFLOW_ATTEMPT:$WORKER_NAME >> runs.txt{rest}'"


def test_a_dag_runs_across_two_workers_on_two_queues(
    tmp_path: Path, redis_url: str, workers: Workers
) -> None:
    # Given phases a -> b -> c; a and b have queues of their own, c (no [workers] table) goes
    # to `default`; worker w1 reads dag-a and default, worker w2 reads dag-b
    workflow = "".join(
        f'[[phase]]\ntask = "{t}"\n{rule}\ntemplate = "{NOTE.format(rest="; echo out-" + t)}"\n'
        for t, rule in [
            ("a", 'rule = "cron=0 0 1 1 *"'),
            ("b", 'depends_on = "a"'),
            ("c", 'depends_on = "b"'),
        ]
    )
    settings = '[workers."a"]\nqueue = "dag-a"\n[workers."b"]\nqueue = "dag-b"\n'
    config = celery_site(tmp_path, redis_url, workflow, settings)
    workers(config, "w1", "dag-a,default")
    workers(config, "w2", "dag-b")

    # When a is triggered and the scheduler runs everything to the end
    assert cli(config, "trigger", "a").returncode == 0
    done = cli(config, "run", "--once")

    # Then each phase ran once, on the worker of its queue, and its output is in the database
    assert done.returncode == 0, done.stderr
    assert lines(tmp_path / "runs.txt") == ["a:1:w1", "b:1:w2", "c:1:w1"]
    found = rows(config)
    assert [(r.task, r.status) for r in found] == [("a", "complete"), ("b", "complete"),
                                                   ("c", "complete")]
    assert "out-b" in logs(config, found[1].id)


def test_a_worker_killed_mid_task_is_closed_as_lost_and_retried(
    tmp_path: Path, redis_url: str, workers: Workers
) -> None:
    # Given a phase with one retry on queue `lost`, a 3 s heartbeat timeout and one worker
    workflow = (
        '[[phase]]\ntask = "slow"\nrule = "cron=0 0 1 1 *"\nretry = 1\n'
        f'template = "{NOTE.format(rest="; sleep 2")}"\n'
    )
    settings = 'heartbeat_timeout = "3s"\n[workers."slow"]\nqueue = "lost"\n'
    config = celery_site(tmp_path, redis_url, workflow, settings)
    first = workers(config, "w1", "lost")
    assert cli(config, "trigger", "slow").returncode == 0
    scheduler = subprocess.Popen(
        [PY, "-m", "scheduler", "run", "--once", "--config", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: lines(tmp_path / "runs.txt") == ["slow:1:w1"])

        # When that worker is killed with -9 mid-task and another one takes its place
        first.kill()
        first.wait()
        message = sent_payload(config, redis_url, 1)
        second = workers(config, "w2", "lost")
        _out, err = scheduler.communicate(timeout=60)
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()

    # Then the first attempt ends as a lost worker, the retry runs (once) on the new worker
    assert scheduler.returncode == 0, err
    first_row, retry = rows(config)
    assert (first_row.status, first_row.msg) == ("error", "worker lost: no heartbeat for 3s")
    assert (retry.attempt, retry.status) == (2, "complete")
    assert lines(tmp_path / "runs.txt") == ["slow:1:w1", "slow:2:w2"]

    # And the lost attempt's message, delivered again (as the broker does after its visibility
    # timeout), runs nothing
    from scheduler.executors import backchannel as bc
    from scheduler.executors.worker import make_app

    app = make_app(redis_url)
    task_id = bc.task_id(message["ns"], 1, 1)
    app.send_task(bc.TASK_NAME, args=[message], queue="lost", task_id=task_id)
    app.close()
    log = tmp_path / "worker-w2.log"
    wait_for(lambda: "execution 1 attempt 1 already claimed" in log.read_text())
    assert lines(tmp_path / "runs.txt") == ["slow:1:w1", "slow:2:w2"]
    assert second.poll() is None


def _launch(execution_id: int, command: str, topic: str = "dup", **extra: Any) -> Any:
    from scheduler.executors import Launch

    return Launch(
        execution_id=execution_id, task_id=f"t{execution_id}", topic=topic, job="", info="",
        task_time=datetime(2024, 1, 2, tzinfo=UTC), attempt=1, meta={}, command=command,
        **extra,
    )


@pytest.fixture
def executor_for(redis_url: str) -> Iterator[Callable[[Path], Any]]:
    """The scheduler's Celery executor, in this process, for a site's configuration."""
    from scheduler.config import load_config
    from scheduler.executors.celery import CeleryExecutor

    made: list[CeleryExecutor] = []

    def make(config: Path) -> CeleryExecutor:
        executor = CeleryExecutor(load_config(str(config)), lambda: datetime.now(UTC))
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.shutdown(0)


def collect_all(executor: Any, count: int, timeout: float = 20) -> list[Any]:
    """``count`` outcomes, however the executor batches them (two may come in one collect)."""
    deadline = time.monotonic() + timeout
    found: list[Any] = []
    while len(found) < count and time.monotonic() < deadline:
        found += executor.collect(deadline - time.monotonic())
    assert len(found) == count, f"{len(found)} outcomes of {count}"
    return found


def collect_one(executor: Any, timeout: float = 20) -> Any:
    (outcome,) = collect_all(executor, 1, timeout)
    return outcome


def test_a_message_delivered_twice_runs_the_command_once(
    tmp_path: Path, redis_url: str, pool: Path, executor_for: Callable[[Path], Any]
) -> None:
    # Given a worker with free slots on queue dup and a launch whose command appends to a file
    from scheduler.executors import Caps
    from scheduler.executors import backchannel as bc
    from scheduler.executors.worker import make_app

    settings = '[workers."dup"]\nqueue = "dup"\n'
    config = celery_site(tmp_path, redis_url, "", settings)
    executor = executor_for(config)
    launch = _launch(7, f"sh -c 'echo run >> {tmp_path / 'runs.txt'}; sleep 0.5'")

    # When it is submitted and the very same message (same task id) is sent again
    executor.submit(launch)
    payload = bc.launch_payload(launch, executor.namespace, "dup", Caps())
    app = make_app(redis_url)
    app.send_task(bc.TASK_NAME, args=[payload], queue="dup",
                  task_id=bc.task_id(executor.namespace, 7, 1))
    app.close()

    # Then one outcome comes back, and the duplicate (taken by another slot at the same time)
    # is dropped without running the command
    outcome = collect_one(executor)
    assert (outcome.execution_id, outcome.result.value) == (7, "complete")
    wait_for(lambda: "execution 7 attempt 1 already claimed" in pool.read_text())
    assert lines(tmp_path / "runs.txt") == ["run"]


def test_timeout_and_cancel_reach_the_process_on_the_worker(
    tmp_path: Path, redis_url: str, pool: Path, executor_for: Callable[[Path], Any]
) -> None:
    # Given a worker and two long commands that note their pid
    from datetime import timedelta

    config = celery_site(tmp_path, redis_url, "", '[workers."stop"]\nqueue = "stop"\n')
    executor = executor_for(config)
    pids = tmp_path / "pids.txt"
    sleeper = f"sh -c 'echo $$ >> {pids}; exec sleep 30'"

    # When one has a 1 s timeout and the other is cancelled once it runs
    executor.submit(_launch(1, sleeper, topic="stop", timeout=timedelta(seconds=1)))
    executor.submit(_launch(2, sleeper, topic="stop"))
    wait_for(lambda: len(lines(pids)) == 2)
    executor.cancel(2, "cancelled by user")
    outcomes = {o.execution_id: o for o in collect_all(executor, 2)}

    # Then both end as they should and neither process is left
    assert (outcomes[1].result.value, outcomes[1].msg) == ("error", "timeout after 1s")
    assert (outcomes[2].result.value, outcomes[2].msg) == ("cancelled", "cancelled by user")
    for pid in map(int, lines(pids)):
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), timeout=5)


def test_output_of_a_remote_execution_arrives_while_it_runs(
    tmp_path: Path, redis_url: str, pool: Path, executor_for: Callable[[Path], Any]
) -> None:
    # Given a worker and a command that prints a line, then waits for a file
    config = celery_site(tmp_path, redis_url, "", '[workers."live"]\nqueue = "live"\n')
    executor = executor_for(config)
    gate = tmp_path / "gate"
    command = f"sh -c 'echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second'"

    # When it runs
    executor.submit(_launch(3, command, topic="live"))
    seen: list[str] = []

    def first_line_live() -> bool:
        """the first line handed out while the command still runs"""
        seen.extend(x.line for x in executor.lines())
        return "first" in seen

    # Then its first line is handed out before it ends, and the rest comes with its outcome
    wait_for(first_line_live, timeout=10)
    gate.touch()
    outcome = collect_one(executor)
    assert outcome.result.value == "complete"
    assert "second" in [x.line for x in outcome.logs]
    assert "first" not in [x.line for x in outcome.logs]


def test_a_scheduler_killed_while_workers_run_records_every_outcome_once(
    tmp_path: Path, redis_url: str, workers: Workers
) -> None:
    # Given two quick and two slow phases on queue `kill`, each with a child, and a phase on
    # queue `kill-late`, which has no worker yet; every command notes its start and its end
    def phase(task: str, sleep: float, queue: str) -> str:
        note = f"sh -c 'echo start:{task} >> runs.txt; sleep {sleep}; echo end:{task} >> runs.txt'"
        return (
            f'[[phase]]\ntask = "{task}"\nrule = "cron=0 0 1 1 *"\ntemplate = "{note}"\n'
            f'[[phase]]\ntask = "{task}-child"\ndepends_on = "{task}"\n'
            f'template = "sh -c \'echo start:{task}-child >> runs.txt\'"\n'
        )

    parents = {"quick1": 0.5, "quick2": 0.5, "slow1": 4, "slow2": 4, "late": 0.1}
    workflow = "".join(phase(t, s, "") for t, s in parents.items())
    settings = "".join(
        f'[workers."{t}"]\nqueue = "{"kill-late" if t == "late" else "kill"}"\n'
        for t in parents
    ) + "".join(f'[workers."{t}-child"]\nqueue = "kill"\n' for t in parents)
    config = celery_site(tmp_path, redis_url, workflow, settings)
    workers(config, "w1", "kill", concurrency=5)
    for task in parents:
        assert cli(config, "trigger", task).returncode == 0
    runs = tmp_path / "runs.txt"
    first = subprocess.Popen(
        [PY, "-m", "scheduler", "run", "--config", str(config)], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # When the scheduler is killed with -9 once the four have started, and the quick ones
        # end while no scheduler runs
        wait_for(lambda: {f"start:{t}" for t in parents if t != "late"} <= set(lines(runs)))
        first.kill()
        first.wait()
        wait_for(lambda: len(stored_outcomes(config, redis_url)) == 2)
        assert "end:slow1" not in lines(runs)

        # Then a restarted scheduler records the ended ones, adopts the running ones, sends the
        # unclaimed one again; once its worker comes, everything ends, each command ran once
        restarted = iso(datetime.now(UTC))
        second = subprocess.Popen(
            [PY, "-m", "scheduler", "run", "--once", "--config", str(config)], cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        workers(config, "w2", "kill-late")
        _out, err = second.communicate(timeout=60)
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert second.returncode == 0, err
    found = rows(config)
    assert sorted(r.task for r in found) == sorted([*parents, *(f"{t}-child" for t in parents)])
    assert {r.status for r in found} == {"complete"}
    ran = lines(runs)
    assert sorted(x for x in ran if x.startswith("start:")) == sorted(
        [*(f"start:{t}" for t in parents), *(f"start:{t}-child" for t in parents)]
    )
    quick = next(r for r in found if r.task == "quick1")
    assert quick.ended_at < restarted  # its true end, not the moment it was recovered
