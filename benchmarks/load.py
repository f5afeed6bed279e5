"""Benchmark: load workflow files of 20 phases each into SQLite, then refresh.

Run from the repository root:
    python benchmarks/load.py [--files N] [--phases N] [--runs N] [--profile] [--profile-refresh]
(the issue's figures: --files 10000).

Prints four figures: a cold load into an empty database (median of ``--runs``, 3 by default,
each into a new database), a refresh with nothing changed, the same after another connection
wrote ``workflow_files`` (so the stats the catalog keeps must be read again), and a refresh with
one file changed (median of 5 each), each beside the median of a floor measured in the same run
on the same tree, its samples taken between the figure's own, and their ratio:
- cold load vs reading, hashing and parsing every file (no validation, no database);
- a refresh vs a plain ``os.walk`` + ``os.stat`` of every file.
Targets on a 2-core machine, for 10,000 files (scaled by --files): cold <= 6 s, unchanged
<= 60 ms, one changed <= 100 ms; the exit status is 1 when one is missed. The re-read figure
has no target of its own: it shows what the kept stats save.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import tomli

from scheduler.catalog import Catalog
from scheduler.clock import SystemClock
from scheduler.store.db import Database

TARGETS_10K = {"cold": 6.0, "unchanged": 0.060, "re-read": None, "one changed": 0.100}


def phase(file_no: int, i: int) -> str:
    """One phase of a realistic mix: cron roots, chains, fan-out, retries, templates."""
    if i % 5 == 0:
        minute = (file_no + i) % 60
        return (
            f'[[phase]]\ntask = "extract:f{file_no}p{i}"\n'
            f'rule = "cron={minute} */2 * * *&offset=-24h&tz=Europe/Berlin"\n'
            f'template = "python3 bin/extract.py --day {{yyyy}}-{{mm}}-{{dd}} --hour {{hh}}"\n'
        )
    parent = f"extract:f{file_no}p{i - i % 5}" if i % 5 == 1 else f"step{i - 1}"
    lines = [f'[[phase]]\ntask = "step{i}"\ndepends_on = "{parent}"\n']
    if i % 3 == 0:
        lines.append("retry = 3\n")
        lines.append('rule = "retry_delay=30s&retry_backoff=exponential&timeout=1h"\n')
    elif i % 4 == 0:
        lines.append('rule = "require={meta:file}&no_alert"\n')
    template = f"python3 bin/step.py {{meta:file}} {{yyyy}}{{mm}}{{dd}}T{{hh}} {i}"
    lines.append(f'template = "{template}"\n')
    return "".join(lines)


def generate(folder: Path, files: int, phases: int) -> list[Path]:
    """Write ``files`` workflow files (10 per sub-folder) of ``phases`` phases each."""
    paths = []
    for n in range(files):
        path = folder / f"group{n // 10:03d}" / f"wf{n:04d}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(phase(n, i) for i in range(phases)), encoding="utf-8")
        paths.append(path)
    return paths


def walk_and_stat(root: Path) -> int:
    """The refresh floor: visit every file of the tree and stat it."""
    count = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            os.stat(os.path.join(folder, name))
            count += 1
    return count


def read_and_parse(paths: list[Path]) -> int:
    """The cold-load floor: read, hash and parse every file (the work no loader can skip)."""
    phases = 0
    for path in paths:
        data = path.read_bytes()
        hashlib.md5(data, usedforsecurity=False).hexdigest()
        phases += len(tomli.loads(data.decode("utf-8"))["phase"])
    return phases


def age(paths: list[Path]) -> None:
    """Put every file's mtime an hour back: a real tree is older than the refresh racy window."""
    then = time.time_ns() - 3600 * 10**9
    for path in paths:
        os.utime(path, ns=(then, then))


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def medians_of(
    runs: int,
    floor: Callable[[], object],
    prepare: Callable[[int], Callable[[], object]],
) -> tuple[float, float]:
    """Medians of ``runs`` timings of the action ``prepare(run)`` returns and of ``floor``,
    taken in turns so that both see the same load of the machine."""
    floors, samples = [], []
    for run in range(runs):
        floors.append(timed(floor))
        action = prepare(run)
        samples.append(timed(action))
    return statistics.median(samples), statistics.median(floors)


def profiled(action: Callable[[], object], repeat: int = 1) -> None:
    """Print a cProfile of ``action`` run ``repeat`` times, by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        action()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


class Cold:
    """Cold loads, each into a new SQLite file; the last one's catalog stays open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.catalog: Catalog | None = None
        self.loads = 0

    def prepare(self, _run: int = 0) -> Callable[[], object]:
        if self.catalog is not None:
            self.catalog.close()
        self.loads += 1
        db = Database(f"sqlite:///{self.root / f'cold{self.loads}.db'}")
        self.catalog = Catalog(db, self.root / "workflows", SystemClock())
        return self.catalog.refresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--phases", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="cold loads to take the median of")
    parser.add_argument("--profile", action="store_true", help="cProfile one more cold load")
    parser.add_argument(
        "--profile-refresh", action="store_true", help="cProfile 10 unchanged refreshes"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tomlflow-bench-") as tmp:
        root = Path(tmp)
        paths = generate(root / "workflows", args.files, args.phases)
        age(paths)
        loads = Cold(root)
        figures = {"cold": medians_of(args.runs, lambda: read_and_parse(paths), loads.prepare)}
        catalog = loads.catalog
        assert catalog is not None

        def walk() -> int:
            return walk_and_stat(root / "workflows")

        figures["unchanged"] = medians_of(5, walk, lambda _: catalog.refresh)
        victim = paths[len(paths) // 2]
        other = Database(catalog.db.url)

        def written_elsewhere(_run: int) -> Callable[[], object]:
            # a write that changes no value still moves the change counter
            with other.write() as conn:
                conn.exec_driver_sql("UPDATE workflow_files SET error = error WHERE error = ''")
            return catalog.refresh

        figures["re-read"] = medians_of(5, walk, written_elsewhere)
        other.close()

        def touch(run: int) -> Callable[[], object]:
            victim.write_text(victim.read_text() + f"\n# edit {run}\n", encoding="utf-8")
            return catalog.refresh

        figures["one changed"] = medians_of(5, walk, touch)
        phases = len(catalog.phases())
        if args.profile_refresh:
            print("--- 10 unchanged refreshes")
            profiled(catalog.refresh, repeat=10)
        if args.profile:
            print("--- one cold load")
            profiled(loads.prepare())
        assert loads.catalog is not None
        loads.catalog.close()
    return report(args, phases, figures)


def report(args: argparse.Namespace, phases: int, figures: dict[str, tuple[float, float]]) -> int:
    """Print each figure beside its floor; 1 when a target (scaled to --files) was missed."""
    python = sys.version.split()[0]
    print(
        f"{args.files} files x {args.phases} phases = {phases} phases "
        f"({datetime.now(UTC):%Y-%m-%d}, Python {python}, {os.cpu_count()} cores)"
    )
    scale = args.files / 10_000
    failed = False
    for name, (seconds, floor) in figures.items():
        line = f"  {name:<12} {seconds * 1000:9.1f} ms   floor {floor * 1000:8.1f} ms "
        line += f"({seconds / floor:4.1f}x)"
        goal = TARGETS_10K[name]
        if goal is not None:
            target = goal * scale
            ok = seconds <= target
            failed |= not ok
            line += f"   target {target * 1000:7.0f} ms  {'ok' if ok else 'MISSED'}"
        print(line)
    print("  floors: cold = read+md5+parse every file; refresh = os.walk+os.stat every file")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
