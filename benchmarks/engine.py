"""Engine benchmarks: scheduler overhead, real processes, dependency latency, cron lateness.

Run: ``python benchmarks/engine.py [--quick] [--only processes,floor,...]``. Everything is
persisted in a SQLite file, as in production; figures are printed, nothing is asserted.
``--quick`` shrinks every size by 10x; ``--only`` runs the named steps.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.clock import SystemClock
from scheduler.config import Config, WorkerConfig
from scheduler.engine import Engine
from scheduler.executors import Launch, LocalExecutor
from scheduler.executors.command import SUPERVISOR, SUPERVISOR_NAME
from scheduler.executors.spool import Spool
from scheduler.planner import base_meta, new_rows
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.schema import executions
from scheduler.tasktime import from_iso

NOOP_TARGET = "benchmarks.engine:noop"


def noop(_launch: Launch) -> None:
    """The in-process worker of the overhead benchmark: does nothing, completes."""


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

    def close(self) -> None:
        self.engine.executor.shutdown(0)
        self.db.close()
        self.tmp.cleanup()


def run_dag(label: str, workflow: str, workers: int, python_worker: bool, first: str) -> None:
    bench = Bench(workflow, workers, python_worker)
    try:
        bench.trigger(first)
        started = time.perf_counter()
        bench.engine.run_once()
        elapsed = time.perf_counter() - started
        rows = bench.rows()
        done = sum(r.status is history.Status.COMPLETE for r in rows)
        print(
            f"{label}: {len(rows)} executions ({done} complete) in {elapsed:.2f}s "
            f"= {len(rows) / elapsed:,.0f} executions/s"
        )
    finally:
        bench.close()


def dependency_latency(length: int, workers: int) -> None:
    bench = Bench(chain(length, "true"), workers, python_worker=False)
    try:
        bench.trigger("c0")
        started = time.perf_counter()
        bench.engine.run_once()
        elapsed = time.perf_counter() - started
        by_id = {r.id: r for r in bench.rows()}
        gaps = sorted(
            (row.started_at - by_id[row.parent_execution_id].ended_at).total_seconds() * 1000
            for row in by_id.values()
            if row.parent_execution_id
            and row.started_at
            and by_id[row.parent_execution_id].ended_at
        )
        print(
            f"chain of {length} `true` links: {elapsed / length * 1000:.2f} ms per link; "
            f"parent end → child start p50 {_pct(gaps, 50):.2f} ms, "
            f"p99 {_pct(gaps, 99):.2f} ms, max {gaps[-1]:.2f} ms"
        )
    finally:
        bench.close()


def chain_overhead(length: int) -> None:
    bench = Bench(chain(length, "noop"), 2, python_worker=True)
    try:
        bench.trigger("c0")
        started = time.perf_counter()
        bench.engine.run_once()
        elapsed = time.perf_counter() - started
        print(f"chain of {length} in-process links: {elapsed / length * 1000:.3f} ms per link")
    finally:
        bench.close()


def cron_lateness(phases: int, single_seconds: int) -> None:
    """``phases`` phases due at one second; then one per-second phase for ``single_seconds``."""
    fire_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    cron = f"{fire_at.second} {fire_at.minute} {fire_at.hour} * * *"
    workflow = "\n".join(
        f'[[phase]]\ntask = "c:p{i}"\nrule = "cron={cron}"\ntemplate = "noop"\n'
        for i in range(phases)
    )
    created = _run_daemon(workflow, until=fire_at + timedelta(seconds=1.5))
    late = sorted((c - fire_at).total_seconds() * 1000 for c, _ in created)
    print(
        f"{phases} phases due at one second: {len(late)} recorded, first {late[0]:.1f} ms, "
        f"last {late[-1]:.1f} ms after their time"
    )
    single = '[[phase]]\ntask = "c:tick"\nrule = "cron=* * * * * *"\ntemplate = "noop"\n'
    start = datetime.now(UTC)
    created = _run_daemon(single, until=start + timedelta(seconds=single_seconds))
    late = sorted((c - s).total_seconds() * 1000 for c, s in created)
    print(
        f"one per-second phase over {single_seconds}s: {len(late)} fires, lateness "
        f"p50 {_pct(late, 50):.1f} ms, p99 {_pct(late, 99):.1f} ms"
    )


def _run_daemon(workflow: str, until: datetime) -> list[tuple[datetime, datetime]]:
    """Run the real loop until ``until``; for each cron row, (the moment another connection
    first saw it committed, its scheduled time). The watcher polls every millisecond."""
    bench = Bench(workflow, 4, python_worker=True)
    stop = threading.Event()
    loop = threading.Thread(target=bench.engine.run_forever, args=(stop,))
    seen: list[tuple[datetime, datetime]] = []
    last_id = 0
    try:
        loop.start()
        while datetime.now(UTC) < until:
            with bench.db.read() as conn:
                rows = conn.execute(
                    select(executions.c.id, executions.c.fire_key).where(executions.c.id > last_id)
                ).all()
            at = datetime.now(UTC)
            for row in rows:
                seen.append((at, from_iso(row.fire_key.split("#")[0])))
                last_id = max(last_id, row.id)
            time.sleep(0.001)
        return seen
    finally:
        stop.set()
        loop.join()
        bench.close()


def spawn_floor(count: int, workers: int) -> None:
    """The rate of starting and waiting for ``true`` directly on ``workers`` threads, bare and
    under the supervisor (output files opened, receipt written and read, files deleted): the
    floor under the engine's `true` figure, and the supervisor's cost per execution."""
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

        def bare(_i: int) -> None:
            subprocess.Popen(["true"], stdin=subprocess.DEVNULL).wait()

        rates = {}
        for name, one in (("bare `true`", bare), ("supervisor + `true`", supervised)):
            started = time.perf_counter()
            threads = [
                threading.Thread(target=_each, args=(one, range(k, count, workers)))
                for k in range(workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rates[name] = count / (time.perf_counter() - started)
        cost = (1 / rates["supervisor + `true`"] - 1 / rates["bare `true`"]) * workers * 1000
        figures = ", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items())
        print(f"spawn floor on {workers} threads: {figures}; supervisor {cost:.2f} ms each")


def _each(one: Callable[[int], None], numbers: range) -> None:
    for i in numbers:
        one(i)


def _pct(values: list[float], pct: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes")
    parser.add_argument("--only", help="comma-separated steps to run (default: all)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    width = 10_000 // scale - 2
    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "overhead",
            lambda: run_dag(
                f"fan-out/fan-in of {width + 2} phases, no-op in-process worker",
                fan_out_fan_in(width, "noop"),
                8,
                True,
                "root",
            ),
        ),
        (
            "processes",
            lambda: run_dag(
                f"fan-out/fan-in of {width + 2} phases running `true`",
                fan_out_fan_in(width, "true"),
                4,
                False,
                "root",
            ),
        ),
        ("floor", lambda: spawn_floor(10_000 // scale, 4)),
        ("latency", lambda: dependency_latency(1000 // scale, 2)),
        ("chain", lambda: chain_overhead(2000 // scale)),
        ("cron", lambda: cron_lateness(1000 // scale, 20 // (scale if scale > 1 else 1))),
    ]
    only = set(args.only.split(",")) if args.only else None
    for name, step in steps:
        if only is None or name in only:
            step()


if __name__ == "__main__":
    main()
