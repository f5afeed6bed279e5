"""Engine benchmarks: each target of issue 15 beside a floor measured in the same run.

Run: ``python benchmarks/engine.py [--runs N] [--quick] [--only overhead,burst,...]``.

Every figure is persisted in a SQLite file, as in production. Each targeted figure is measured
``--runs`` times (default 3), each time next to its floor; the summary prints the medians:
figure, floor, ratio, target, ``met``/``MISSED``. Exit 1 when a target that ran is missed.
``--quick``: every size 10x smaller and one run. Steps (``--only``): overhead, processes,
burst, burst-true, cron, rss (the targets); floor, latency, chain (figures only, run once).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.clock import SystemClock
from scheduler.config import Config, WorkerConfig
from scheduler.engine import Engine
from scheduler.executors import Launch, LocalExecutor
from scheduler.executors.command import SUPERVISOR, SUPERVISOR_NAME
from scheduler.executors.spool import Spool
from scheduler.planner import base_meta, new_rows
from scheduler.store import history
from scheduler.store.db import BUSY_TIMEOUT_MS, Database
from scheduler.store.schema import executions
from scheduler.tasktime import from_iso, iso

REPO = Path(__file__).resolve().parent.parent
NOOP_MODULE = "benchmarks.engine"
NOOP_TARGET = f"{NOOP_MODULE}:noop"

STARTS: dict[int, float] = {}
"""When the no-op worker was called (``time.time()``), by execution id."""
_STARTS_LOCK = threading.Lock()


def noop(launch: Launch) -> None:
    """The in-process worker: records when it was called, then completes."""
    called = time.time()
    with _STARTS_LOCK:
        STARTS[launch.execution_id] = called


def recorded_starts() -> dict[int, float]:
    """The ``STARTS`` the engine's worker writes to, emptied. Run as a script, this file is
    ``__main__``; the worker imports it again as ``benchmarks.engine``, a module of its own."""
    starts: dict[int, float] = importlib.import_module(NOOP_MODULE).STARTS
    starts.clear()
    return starts


# -- judging ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """How a figure is judged: met when it reaches ``absolute``, or ``relative`` times its
    floor (at least, for a rate; at most, for a time or a size)."""

    unit: str
    higher_is_better: bool
    absolute: float | None = None
    relative: float | None = None

    def met(self, figure: float, floor: float | None) -> bool:
        bars = [self.absolute] if self.absolute is not None else []
        if self.relative is not None and floor is not None:
            bars.append(self.relative * floor)
        if self.higher_is_better:
            return any(figure >= bar for bar in bars)
        return any(figure <= bar for bar in bars)

    def text(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        parts = []
        if self.absolute is not None:
            parts.append(f"{sign} {_number(self.absolute)} {self.unit}")
        if self.relative is not None:
            parts.append(f"{sign} {self.relative:g}x floor")
        return " or ".join(parts)


@dataclass(frozen=True)
class Sample:
    """One run's figure, its floor (None: the target is absolute) and what else it showed."""

    figure: float
    floor: float | None
    notes: str = ""


@dataclass
class Row:
    """A targeted figure: what it measures, how one run measures it, and its samples."""

    name: str
    goal: Goal
    measure: Callable[[], Sample]
    samples: list[Sample] = field(default_factory=list)

    def run(self, number: int) -> None:
        sample = self.measure()
        self.samples.append(sample)
        floor = f", floor {_number(sample.floor)}" if sample.floor is not None else ""
        notes = f"; {sample.notes}" if sample.notes else ""
        print(f"  run {number} {self.name}: {_number(sample.figure)} {self.goal.unit}"
              f"{floor}{notes}", flush=True)

    def summary(self) -> tuple[str, bool]:
        """The summary line from the medians of the runs, and whether the target is met."""
        figure = statistics.median(s.figure for s in self.samples)
        floors = [s.floor for s in self.samples if s.floor is not None]
        floor = statistics.median(floors) if floors else None
        ok = self.goal.met(figure, floor)
        ratio = f"{figure / floor:6.2f}" if floor else f"{'-':>6}"
        shown_floor = _number(floor) if floor is not None else "-"
        line = (f"{self.name:<38} {_number(figure):>8} {shown_floor:>8} {self.goal.unit:<6} "
                f"{ratio}  {self.goal.text():<32} {'met' if ok else 'MISSED'}")
        return line, ok


def _number(value: float | None) -> str:
    if value is None or math.isinf(value):
        return "-" if value is None else "never"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


# -- workflows and the engine ------------------------------------------------------------------


def fan_out_fan_in(width: int, template: str) -> str:
    """root → ``width`` middle phases → one join (fires once per middle, as flowlord does)."""
    lines = [f'[[phase]]\ntask = "root"\nrule = "files=never/*"\ntemplate = "{template}"\n']
    lines += [
        f'[[phase]]\ntask = "mid:m{i}"\ndepends_on = "root"\ntemplate = "{template}"\n'
        for i in range(width)
    ]
    lines.append(f'[[phase]]\ntask = "join"\ndepends_on = "mid"\ntemplate = "{template}"\n')
    return "\n".join(lines)


def chain(length: int, template: str) -> str:
    lines = [f'[[phase]]\ntask = "c0"\nrule = "files=never/*"\ntemplate = "{template}"\n']
    lines += [
        f'[[phase]]\ntask = "c{i}"\ndepends_on = "c{i - 1}"\ntemplate = "{template}"\n'
        for i in range(1, length)
    ]
    return "\n".join(lines)


def burst(phases: int, template: str, lead: float = 4.0) -> tuple[datetime, str]:
    """``phases`` phases whose cron is one second, ``lead`` seconds from now (the engine must
    have seen them before it: a phase's schedule starts when it is first seen)."""
    fire_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
    cron = f"{fire_at.second} {fire_at.minute} {fire_at.hour} * * *"
    workflow = "\n".join(
        f'[[phase]]\ntask = "c:p{i}"\nrule = "cron={cron}"\ntemplate = "{template}"\n'
        for i in range(phases)
    )
    return fire_at, workflow


class Bench:
    """A fresh folder, database and engine for one measurement."""

    def __init__(self, workflow: str, max_workers: int, python_worker: bool) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        (root / "workflows").mkdir()
        (root / "workflows" / "bench.toml").write_text(workflow)
        topics = set(re.findall(r'task = "([^":]+)', workflow))
        workers = {t: WorkerConfig(python=NOOP_TARGET) for t in topics} if python_worker else {}
        self.config = Config(
            workflows=root / "workflows",
            database=f"sqlite:///{root / 'bench.db'}",
            max_workers=max_workers,
            workers=workers,
        )
        self.db = Database(self.config.database)
        clock = SystemClock()
        executor = LocalExecutor.for_config(self.config, clock.now)  # spool beside bench.db
        self.engine = Engine(self.config, self.db, executor, clock)
        self.engine.catalog.refresh()

    def trigger(self, task: str) -> None:
        spec = self.engine.catalog.get(task)
        assert spec is not None, task
        now = datetime.now(UTC)
        rows = new_rows(
            spec, now, base_meta(spec), history.Trigger.MANUAL, now, self.config.workflow_root
        )
        with self.db.write() as conn:
            history.insert_executions(conn, rows, now)

    def rows(self) -> list[history.Execution]:
        with self.db.read() as conn:
            return [history.Execution.from_row(r) for r in conn.execute(select(executions))]

    def fires(self) -> list[tuple[int, datetime, datetime | None]]:
        """(id, scheduled time, started_at) of every cron fire."""
        query = select(executions.c.id, executions.c.fire_key, executions.c.started_at).where(
            executions.c.fire_key.is_not(None)
        )
        with self.db.read() as conn:
            return [
                (r.id, _scheduled(r.fire_key), from_iso(r.started_at) if r.started_at else None)
                for r in conn.execute(query)
            ]

    def ended_count(self) -> int:
        query = select(func.count()).where(executions.c.ended_at.is_not(None))
        with self.db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def close(self) -> None:
        self.engine.executor.shutdown(0)
        self.db.close()
        self.tmp.cleanup()


class Daemon:
    """The real loop (``run_forever``) of a bench's engine on a thread, while in the block."""

    def __init__(self, bench: Bench) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=bench.engine.run_forever, args=(self.stop,))

    def __enter__(self) -> Daemon:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _scheduled(fire_key: str) -> datetime:
    return from_iso(fire_key.split("#")[0])


def _wait_until(done: Callable[[], bool], deadline: datetime, poll: float) -> None:
    while not done() and datetime.now(UTC) < deadline:
        time.sleep(poll)


# -- the targeted figures ----------------------------------------------------------------------


def overhead(width: int) -> Sample:
    """Row 1: the fan-out/fan-in DAG, no-op worker, 8 workers, beside the raw statement rate."""
    rate, count = run_dag(fan_out_fan_in(width, "noop"), 8, python_worker=True)
    floor = statement_floor(count, batch=8)
    return Sample(rate, floor, f"{count} executions")


def processes(width: int, spawns: int) -> Sample:
    """Row 2: the same DAG running `true` on 4 workers, beside bare `true` on 2 threads."""
    rate, count = run_dag(fan_out_fan_in(width, "true"), 4, python_worker=False)
    floor = spawns / spawn_seconds(spawns, 2, _bare)
    return Sample(rate, floor, f"{count} executions")


def run_dag(workflow: str, workers: int, python_worker: bool) -> tuple[float, int]:
    """Executions per second of ``run_once`` from a manual trigger of root, and their count."""
    recorded_starts()
    bench = Bench(workflow, workers, python_worker)
    try:
        bench.trigger("root")
        started = time.perf_counter()
        bench.engine.run_once()
        elapsed = time.perf_counter() - started
        rows = bench.rows()
    finally:
        bench.close()
    done = sum(r.status is history.Status.COMPLETE for r in rows)
    if done != len(rows):
        raise SystemExit(f"only {done} of {len(rows)} executions completed")
    return len(rows) / elapsed, len(rows)


def burst_noop(phases: int) -> Sample:
    """Row 3: when the no-op worker was called for the last of ``phases`` fires of one second.

    Another process polls every millisecond for committed rows, to show when the last row was
    committed; it competes with the engine for the two cores (not for its interpreter lock)."""
    fire_at, workflow = burst(phases, "noop")
    bench = Bench(workflow, 4, python_worker=True)
    starts = recorded_starts()
    try:
        deadline = fire_at + timedelta(seconds=30)
        watcher = _watch_commits(bench, phases, deadline)
        with Daemon(bench):
            _wait_until(lambda: len(starts) >= phases, deadline, 0.01)
        seen: list[float] = json.loads(watcher.communicate()[0] or "[]")
        fires = bench.fires()
    finally:
        bench.close()
    late = sorted((starts[i] - at.timestamp()) * 1000 for i, at, _ in fires if i in starts)
    committed = max(seen, default=math.inf)
    last = late[-1] if len(late) == phases else math.inf
    notes = (f"{len(late)} of {phases} started, first {late[0] if late else math.inf:.1f} ms; "
             f"last row committed {committed:.1f} ms after its time")
    return Sample(last, None, notes)


_WATCHER = """
import json, sqlite3, sys, time
from datetime import datetime
path, count, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 5000")
seen, last = [], 0
while len(seen) < count and time.time() < deadline:
    rows = conn.execute("SELECT id, fire_key FROM executions WHERE id > ?", (last,)).fetchall()
    at = time.time()
    for row_id, key in rows:
        due = datetime.fromisoformat(key.split("#")[0]).timestamp()
        seen.append((at - due) * 1000)
        last = max(last, row_id)
    time.sleep(0.001)
print(json.dumps(seen))
"""


def _watch_commits(bench: Bench, count: int, deadline: datetime) -> subprocess.Popen[str]:
    """A process that polls the database every millisecond until it has seen ``count`` cron
    rows (or ``deadline``), then prints, for each, ms from its scheduled time to the moment it
    first saw it committed. A process, not a thread: it must not take the engine's
    interpreter lock."""
    path = str(bench.config.workflow_root.parent / "bench.db")
    argv = [sys.executable, "-c", _WATCHER, path, str(count), str(deadline.timestamp())]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def burst_true(phases: int) -> Sample:
    """Row 4: the last ``started_at`` of ``phases`` fires of one second running `true` on 4
    workers, beside the time bare `true` takes to run ``phases`` times on 4 threads."""
    fire_at, workflow = burst(phases, "true")
    bench = Bench(workflow, 4, python_worker=False)
    try:
        with Daemon(bench):
            # Until all ended, not just started: a stop would cancel the last ones, noisily.
            _wait_until(lambda: bench.ended_count() >= phases,
                        fire_at + timedelta(seconds=60), 0.02)
        fires = bench.fires()
    finally:
        bench.close()
    floor = spawn_seconds(phases, 4, _bare) * 1000
    late = sorted((s - at).total_seconds() * 1000 for _, at, s in fires if s is not None)
    last = late[-1] if len(late) == phases else math.inf
    first = late[0] if late else math.inf
    return Sample(last, floor, f"{len(late)} of {phases} started, first {first:.1f} ms")


def cron_single(seconds: int) -> Sample:
    """Row 5: one per-second phase for ``seconds``; p99 of the no-op worker's call after the
    scheduled second, beside the p99 of a bare sleep's wake-up after its wall-clock instant."""
    floor = wake_floor(100)
    workflow = '[[phase]]\ntask = "c:tick"\nrule = "cron=* * * * * *"\ntemplate = "noop"\n'
    bench = Bench(workflow, 4, python_worker=True)
    starts = recorded_starts()
    try:
        with Daemon(bench):
            time.sleep(seconds)
        fires = bench.fires()
    finally:
        bench.close()
    late = sorted((starts[i] - at.timestamp()) * 1000 for i, at, _ in fires if i in starts)
    if not late:
        return Sample(math.inf, floor, "no fire started")
    cold = cold_floor(5)
    notes = (
        f"{len(late)} fires, p50 {_pct(late, 50):.2f} ms; a bare sqlite3 commit after sleeping "
        f"to each second: p50 {_pct(cold, 50):.2f}, max {cold[-1]:.2f} ms"
    )
    return Sample(_pct(late, 99), floor, notes)


def cold_floor(count: int) -> list[float]:
    """ms after each of ``count`` whole seconds by which a bare loop, asleep since the last one,
    has committed one row to a WAL SQLite file (``BEGIN IMMEDIATE``, INSERT, COMMIT), sorted.

    A per-second phase wakes as this does: code and data a second colder than in the timer
    floor. On a machine that reclaims idle pages (a VM's balloon, proactive reclaim), that
    costs milliseconds the 10 ms timer floor never sees."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(str(Path(tmp) / "cold.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, at TEXT NOT NULL)")
        late = []
        for _ in range(count):
            second = math.floor(time.time()) + 1
            time.sleep(max(0.0, second - time.time()))
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (at) VALUES (?)", (str(second),))
            conn.execute("COMMIT")
            late.append((time.time() - second) * 1000)
        conn.close()
    return sorted(late)


def wake_floor(count: int) -> float:
    """p99 ms by which a thread sleeping on the monotonic clock toward a wall-clock instant
    10 ms away reads the wall clock late on waking: what this machine allows a timer."""
    late = []
    for _ in range(count):
        target = time.time() + 0.01
        time.sleep(max(0.0, target - time.time()))
        late.append((time.time() - target) * 1000)
    return _pct(sorted(late), 99)


def rss(width: int) -> Sample:
    """Row 6: peak RSS (MB) of ``tomlflow run --once`` on the no-op DAG (8 workers) in a child
    process, beside the peak RSS of a child that only imports ``scheduler.engine``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TOMLFLOW_CONFIG", None)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / "workflows").mkdir()
        (site / "workflows" / "bench.toml").write_text(fan_out_fan_in(width, "noop"))
        workers = "".join(f'[workers."{t}"]\npython = "{NOOP_TARGET}"\n'
                          for t in ("root", "mid", "join"))
        (site / "tomlflow.toml").write_text(
            f'[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///bench.db"\n'
            f"max_workers = 8\n\n{workers}"
        )
        tomlflow = tomlflow_command()
        subprocess.run([*tomlflow, "trigger", "root"], cwd=site, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        figure = peak_rss([*tomlflow, "run", "--once", "--json"], site, env)
    floor = peak_rss([sys.executable, "-c", "import scheduler.engine"], REPO, env)
    return Sample(figure, floor, f"{' '.join(Path(a).name for a in tomlflow)} run --once")


def tomlflow_command() -> list[str]:
    """The console script beside this interpreter (what a user runs), else ``-m scheduler``."""
    script = shutil.which("tomlflow", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "scheduler"]


# Run by a small Python between us and the measured command: a child's peak RSS starts at
# the size of the process it was forked from (Linux keeps the pre-exec peak), so forking the
# command from this big benchmark process would report at least this process's size.
_RSS_WRAPPER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_pid, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
print(child.returncode, usage.ru_maxrss)
"""


def peak_rss(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """The peak resident set (MB, 2**20 bytes) of a process running ``argv``, which must
    succeed: the ``ru_maxrss`` that ``wait4`` reports for that process (and its children)."""
    wrapped = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *argv], cwd=cwd, env=env,
                             capture_output=True, text=True, check=True)
    code, kilobytes = wrapped.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(argv)} failed:\n{wrapped.stderr}")
    return int(kilobytes) / 1024  # kilobytes on Linux


# -- floors ----------------------------------------------------------------------------------

_COLUMNS = ("task_id, file_path, task, topic, job, task_time, attempt, trigger, status, info, "
            "meta, msg, created_at, not_before, parent_execution_id, fire_key, started_at, "
            "ended_at, duration_seconds")
_INSERT = f"INSERT INTO executions ({_COLUMNS}) VALUES ({', '.join('?' * 19)})"
_READY = ("SELECT * FROM executions WHERE status = 'queued' AND not_before <= ? "
          "ORDER BY not_before, id LIMIT ?")
_RUNNING = "UPDATE executions SET status = 'running', started_at = ? WHERE id = ?"
_FINISH = ("UPDATE executions SET status = ?, msg = ?, exit_code = ?, started_at = ?, "
           "ended_at = ?, duration_seconds = ?, pid = ? WHERE id = ?")


def statement_floor(count: int, batch: int) -> float:
    """Executions per second of the bare statements ``count`` executions need, through the
    plain ``sqlite3`` module on a database made by ``Database`` (our schema, indexes and
    triggers), with the engine's pragmas: per execution the INSERT of its queued row, its
    claim (the SELECT of the oldest ready rows, the UPDATE to running) and its finish, all
    three for ``batch`` executions (one tick's worth at most) in one ``BEGIN IMMEDIATE``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "floor.db"
        Database(f"sqlite:///{path}").close()
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            rows = [_floor_row(i) for i in range(count)]
            started = time.perf_counter()
            for first in range(0, count, batch):
                _statements(conn, rows[first : first + batch])
            return count / (time.perf_counter() - started)
        finally:
            conn.close()


def _floor_row(i: int) -> tuple[str, str, str, int | None]:
    """A middle phase's row of the fan-out: chain id, task, job, parent id."""
    job = f"m{i % 10_000}"
    return uuid.uuid4().hex, f"mid:{job}", job, i or None


def _statements(conn: sqlite3.Connection, rows: list[tuple[str, str, str, int | None]]) -> None:
    now = iso(datetime.now(UTC))
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(_INSERT, [
        (chain_id, "bench.toml", task, "mid", job, now, 1, "dependency", "queued", "noop", "{}",
         "", now, now, parent, None, None, None, None)
        for chain_id, task, job, parent in rows
    ])
    ids = [row[0] for row in conn.execute(_READY, (now, len(rows))).fetchall()]
    conn.executemany(_RUNNING, [(now, i) for i in ids])
    conn.executemany(_FINISH, [("complete", "", None, now, now, 0.0, None, i) for i in ids])
    conn.execute("COMMIT")


def spawn_seconds(count: int, threads: int, one: Callable[[int], None]) -> float:
    """Seconds to call ``one`` for 0..count-1 spread over ``threads`` threads."""
    started = time.perf_counter()
    workers = [
        threading.Thread(target=_each, args=(one, range(k, count, threads)))
        for k in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def _each(one: Callable[[int], None], numbers: Iterable[int]) -> None:
    for i in numbers:
        one(i)


def _bare(_i: int) -> None:
    subprocess.Popen(["true"], stdin=subprocess.DEVNULL).wait()


# -- figures without a target ------------------------------------------------------------------


def supervisor_floor(count: int, workers: int) -> None:
    """The rate of starting and waiting for ``true`` directly on ``workers`` threads, bare and
    under the supervisor (output files opened, receipt written and read, files deleted): what
    separates the engine's `true` figure from the bare spawn rate."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp) / "spool")
        spool.ensure()

        def supervised(i: int) -> None:
            out, err = spool.open_output(i)
            args = ["/bin/sh", "-c", SUPERVISOR, SUPERVISOR_NAME, spool.prefix(i), "exec", "true"]
            try:
                subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err).wait()
            finally:
                os.close(out)
                os.close(err)
            assert spool.receipt(i) is not None
            spool.release([i])

        rates = {
            name: count / spawn_seconds(count, workers, one)
            for name, one in (("bare `true`", _bare), ("supervisor + `true`", supervised))
        }
    cost = (1 / rates["supervisor + `true`"] - 1 / rates["bare `true`"]) * workers * 1000
    figures = ", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items())
    print(f"spawn floor on {workers} threads: {figures}; supervisor {cost:.2f} ms each")


def dependency_latency(length: int, workers: int) -> None:
    bench = Bench(chain(length, "true"), workers, python_worker=False)
    try:
        bench.trigger("c0")
        started = time.perf_counter()
        bench.engine.run_once()
        elapsed = time.perf_counter() - started
        by_id = {r.id: r for r in bench.rows()}
    finally:
        bench.close()
    gaps = sorted(
        (begun - parent_end).total_seconds() * 1000
        for row in by_id.values()
        if row.parent_execution_id
        and (begun := row.started_at)
        and (parent_end := by_id[row.parent_execution_id].ended_at)
    )
    print(
        f"chain of {length} `true` links: {elapsed / length * 1000:.2f} ms per link; "
        f"parent end → child start p50 {_pct(gaps, 50):.2f} ms, "
        f"p99 {_pct(gaps, 99):.2f} ms, max {gaps[-1]:.2f} ms"
    )


def chain_overhead(length: int) -> None:
    bench = Bench(chain(length, "noop"), 2, python_worker=True)
    try:
        bench.trigger("c0")
        started = time.perf_counter()
        bench.engine.run_once()
        elapsed = time.perf_counter() - started
    finally:
        bench.close()
    print(f"chain of {length} in-process links: {elapsed / length * 1000:.3f} ms per link")


def _pct(values: list[float], pct: float) -> float:
    """The ``pct`` percentile of sorted ``values`` (inclusive method)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


# -- the command line --------------------------------------------------------------------------


def targeted(scale: int) -> dict[str, Row]:
    """The rows of issue 15's targets table that the engine owns, by step name."""
    width = 10_000 // scale - 2
    rate = Goal("exec/s", higher_is_better=True, absolute=8_000, relative=0.60)
    return {
        "overhead": Row(f"{width + 2:,} fan-out, no-op worker", rate, lambda: overhead(width)),
        "processes": Row(
            f"{width + 2:,} fan-out running `true`",
            Goal("exec/s", higher_is_better=True, absolute=1_300, relative=0.55),
            lambda: processes(width, 10_000 // scale),
        ),
        "burst": Row(
            f"{1000 // scale:,} due at one second: last start",
            Goal("ms", higher_is_better=False, absolute=100),
            lambda: burst_noop(1000 // scale),
        ),
        "burst-true": Row(
            "same running `true`: last started_at",
            Goal("ms", higher_is_better=False, relative=1.3),
            lambda: burst_true(1000 // scale),
        ),
        "cron": Row(
            "per-second phase: p99 lateness",
            Goal("ms", higher_is_better=False, absolute=2),
            lambda: cron_single(20 if scale == 1 else 5),
        ),
        "rss": Row(
            f"run --once, {width + 2:,} DAG: peak RSS",
            Goal("MB", higher_is_better=False, absolute=120),
            lambda: rss(width),
        ),
    }


def untargeted(scale: int) -> dict[str, Callable[[], None]]:
    return {
        "floor": lambda: supervisor_floor(10_000 // scale, 4),
        "latency": lambda: dependency_latency(1000 // scale, 2),
        "chain": lambda: chain_overhead(2000 // scale),
    }


FLOORS = """\
floors: fan-out = the raw sqlite3 statements of one execution (insert, claim, finish), 8 per
  transaction; `true` = bare `true` started and waited for on 2 threads; burst `true` = the
  time to run bare `true` as many times on 4 threads; per-second = p99 of a bare timer's
  wake-up; RSS = a child that only imports scheduler.engine."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes, 1 run")
    parser.add_argument("--runs", type=int, help="runs of each targeted figure (default 3)")
    parser.add_argument("--only", help="comma-separated steps to run (default: all)")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    runs = args.runs or (1 if args.quick else 3)
    only = set(args.only.split(",")) if args.only else None
    rows = [row for name, row in targeted(scale).items() if only is None or name in only]
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, load {_load()}; {runs} run(s)", flush=True)
    for number in range(1, runs + 1):
        for row in rows:
            row.run(number)
    for name, step in untargeted(scale).items():
        if only is None or name in only:
            step()
    return report(rows)


def report(rows: list[Row]) -> int:
    """Print the medians beside their floors and targets; 1 when a target is missed."""
    if not rows:
        return 0
    print(f"load {_load()}; medians of {len(rows[0].samples)} run(s):")
    print(f"{'figure':<38} {'median':>8} {'floor':>8} {'':<6} {'ratio':>6}  {'target':<32} result")
    missed = False
    for row in rows:
        line, ok = row.summary()
        missed = missed or not ok
        print(line)
    print(FLOORS)
    return 1 if missed else 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
