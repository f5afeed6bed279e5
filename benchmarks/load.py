"""Benchmark: load 1,000 workflow files of 20 phases each into SQLite, then refresh.

Run from the repository root:  python benchmarks/load.py [--files N] [--phases N] [--profile]

Prints three figures: a cold load into an empty database, a refresh with nothing changed, and
a refresh with one file changed (median of 5 each for the last two). Targets on a 2-core
machine: cold <= 1.5 s, unchanged <= 100 ms, one changed <= 150 ms.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from scheduler.catalog import Catalog
from scheduler.clock import SystemClock
from scheduler.store.db import Database

TARGETS = {"cold": 1.5, "unchanged": 0.100, "one changed": 0.150}


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


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def median_of(runs: int, prepare: Callable[[int], None], action: Callable[[], object]) -> float:
    samples = []
    for run in range(runs):
        prepare(run)
        samples.append(timed(action))
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--phases", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="cProfile the cold load")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tomlflow-bench-") as tmp:
        root = Path(tmp)
        paths = generate(root / "workflows", args.files, args.phases)
        db = Database(f"sqlite:///{root / 'bench.db'}")
        catalog = Catalog(db, root / "workflows", SystemClock())
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        cold = timed(catalog.refresh)
        if profiler:
            profiler.disable()
        unchanged = median_of(5, lambda _: None, catalog.refresh)
        victim = paths[len(paths) // 2]

        def touch(run: int) -> None:
            victim.write_text(victim.read_text() + f"\n# edit {run}\n", encoding="utf-8")

        changed = median_of(5, touch, catalog.refresh)
        phases = len(catalog.phases())
        db.close()
    print(f"{args.files} files x {args.phases} phases = {phases} phases "
          f"({datetime.now(UTC):%Y-%m-%d}, Python {sys.version.split()[0]})")
    failed = False
    for name, seconds in (("cold", cold), ("unchanged", unchanged), ("one changed", changed)):
        target = TARGETS[name]
        ok = seconds <= target
        failed |= not ok
        print(f"  {name:<12} {seconds * 1000:8.1f} ms   target {target * 1000:6.0f} ms  "
              f"{'ok' if ok else 'MISSED'}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
