"""Celery executor benchmarks: throughput on two local workers, overhead, chain latency.

Run: ``python benchmarks/celery.py [--quick] [--concurrency N]``. Starts a private redis-server
on a free port and two real ``tomlflow worker`` processes (queue ``default``), then runs, with a
SQLite file database as in production:

- the 10,000-phase fan-out/fan-in DAG of ``benchmarks/engine.py`` running ``true``, on the Celery
  executor and then on the local executor: executions/s each, and the per-execution overhead of
  Celery against local (the difference of the two per-execution wall times);
- a chain of ``true`` links on the Celery executor: parent ``ended_at`` → child ``started_at``
  (both stamped on the worker host), p50 and p99.

Targets: ≥ 400 executions/s, chain link ≤ 10 ms p50. Exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named celery.py: its own folder must not shadow the celery package.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks.engine import Bench, _pct, chain, fan_out_fan_in  # noqa: E402
from scheduler.clock import SystemClock  # noqa: E402
from scheduler.config import ExecutorConfig  # noqa: E402
from scheduler.engine import Engine  # noqa: E402
from scheduler.executors.celery import CeleryExecutor  # noqa: E402
from scheduler.store import history  # noqa: E402

TARGET_RATE = 400.0
TARGET_LINK_MS = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """A private redis-server and two ``tomlflow worker`` processes."""

    def __init__(self, concurrency: int) -> None:
        server = shutil.which("redis-server")
        if server is None:
            sys.exit("benchmarks/celery.py needs redis-server (apt-get install redis-server)")
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        port = _free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.procs = [
            subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(root)],
                stdout=subprocess.DEVNULL,
            )
        ]
        config = root / "tomlflow.toml"
        config.write_text(f'[executor]\nkind = "celery"\nbroker = "{self.url}"\n')
        for i in range(2):
            log = root / f"worker{i}.log"
            with log.open("wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "scheduler", "worker", "--config",
                         str(config), "--concurrency", str(concurrency)],
                        cwd=root, stdout=out, stderr=subprocess.STDOUT,
                    )
                )
            while "tomlflow worker ready" not in log.read_text():
                if self.procs[-1].poll() is not None:
                    sys.exit(f"worker failed to start:\n{log.read_text()}")
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the redis-server and the workers (with their children)."""
        total = 0
        for proc in self.procs:
            with open(f"/proc/{proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)
        self.tmp.cleanup()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def celery_bench(workflow: str, url: str, in_flight: int) -> Bench:
    """A Bench whose engine runs its launches on the cluster's workers."""
    bench = Bench(workflow, in_flight, python_worker=False)
    bench.engine.executor.shutdown(0)
    config = bench.config.__class__(
        **{**bench.config.__dict__, "executor": ExecutorConfig(kind="celery", broker=url)}
    )
    clock = SystemClock()
    executor = CeleryExecutor(config, clock.now)
    bench.engine = Engine(config, bench.db, executor, clock)
    bench.engine.catalog.refresh()
    return bench


def run_dag(bench: Bench) -> tuple[int, float]:
    try:
        bench.trigger("root")
        started = time.perf_counter()
        bench.engine.run_once()
        elapsed = time.perf_counter() - started
        rows = bench.rows()
        bad = [r for r in rows if r.status is not history.Status.COMPLETE]
        if bad:
            sys.exit(f"{len(bad)} executions did not complete, e.g. {bad[0].msg!r}")
        return len(rows), elapsed
    finally:
        bench.close()


def chain_gaps(bench: Bench) -> list[float]:
    try:
        bench.trigger("c0")
        bench.engine.run_once()
        by_id = {r.id: r for r in bench.rows()}
        return sorted(
            (row.started_at - by_id[row.parent_execution_id].ended_at).total_seconds() * 1000
            for row in by_id.values()
            if row.parent_execution_id
            and row.started_at
            and by_id[row.parent_execution_id].ended_at
        )
    finally:
        bench.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller sizes")
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker")
    parser.add_argument("--in-flight", type=int, default=32, help="[scheduler] max_workers")
    args = parser.parse_args()
    width, links = (1_000, 100) if args.quick else (10_000, 500)
    cluster = Cluster(args.concurrency)
    try:
        dag = fan_out_fan_in(width - 2, "true")
        others, own = cluster.cpu_seconds(), _own_cpu()
        count, elapsed = run_dag(celery_bench(dag, cluster.url, args.in_flight))
        others = (cluster.cpu_seconds() - others) / count * 1000
        own = (_own_cpu() - own) / count * 1000
        rate = count / elapsed
        print(f"celery, 2 workers x {args.concurrency}: {count} `true` executions in "
              f"{elapsed:.2f}s = {rate:,.0f} executions/s; CPU per execution: scheduler "
              f"{own:.2f} ms, workers with their commands and redis {others:.2f} ms")
        own_local = _own_cpu() + _children_cpu()
        local_count, local_elapsed = run_dag(Bench(dag, 4, python_worker=False))
        own_local = (_own_cpu() + _children_cpu() - own_local) / local_count * 1000
        local_rate = local_count / local_elapsed
        overhead = (elapsed / count - local_elapsed / local_count) * 1000
        print(f"local, 4 workers: {local_count} executions in {local_elapsed:.2f}s = "
              f"{local_rate:,.0f} executions/s, CPU {own_local:.2f} ms per execution (scheduler "
              f"and commands); celery costs {overhead:+.2f} ms per execution in wall time")
        gaps = chain_gaps(celery_bench(chain(links, "true"), cluster.url, args.in_flight))
        p50 = _pct(gaps, 50)
        print(f"celery chain of {links} `true` links: parent end → child start p50 {p50:.2f} ms, "
              f"p99 {_pct(gaps, 99):.2f} ms, max {gaps[-1]:.2f} ms")
    finally:
        cluster.close()
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    missed = rate < TARGET_RATE or p50 > TARGET_LINK_MS
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
