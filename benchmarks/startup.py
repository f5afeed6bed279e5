"""Benchmark: how fast the command line starts, as a ratio to a bare Python start.

Run from the repository root:  python benchmarks/startup.py [--runs N]

Times three commands in fresh processes, interleaved so that a busy machine slows each alike:
``python -c pass`` (the floor), ``tomlflow --version`` and ``tomlflow status`` on a copy of the
bundled workflows (its database is made once beforehand, untimed). Prints the median wall and
CPU time of each and its ratio to the floor. Targets (wall): --version within 8x the floor,
status within 15x. The repository's own ``scheduler`` is imported (PYTHONPATH), through the
``tomlflow`` script next to this Python when there is one, else ``python -m scheduler``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"tomlflow --version": 8.0, "tomlflow status": 15.0}


def tomlflow_command() -> list[str]:
    """The console script beside this interpreter (what a user runs), else ``-m scheduler``."""
    script = shutil.which("tomlflow", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "scheduler"]


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (>= 7)")
    runs = max(7, parser.parse_args().runs)
    tomlflow = tomlflow_command()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TOMLFLOW_CONFIG", None)
    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder)
        shutil.copytree(REPO / "workflows", site / "workflows")
        subprocess.run([*tomlflow, "refresh"], cwd=site, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "tomlflow --version": [*tomlflow, "--version"],
            "tomlflow status": [*tomlflow, "status"],
        }
        for argv in commands.values():  # warm the file cache and the bytecode
            timed(argv, site, env)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                samples[name].append(timed(argv, site, env))
    return report(samples, tomlflow, runs)


def report(samples: dict[str, list[tuple[float, float]]], tomlflow: list[str], runs: int) -> int:
    """Medians and ratios to the floor; the targets apply to wall time. CPU time is printed
    too: on a busy machine it is the steadier of the two."""
    floor = _medians(samples["python -c pass"])
    print(f"tomlflow started as: {' '.join(tomlflow)}; median of {runs} runs each")
    print(f"{'':<20} {'wall':>9} {'ratio':>6} {'cpu':>9} {'ratio':>6}")
    missed = False
    for name, values in samples.items():
        wall, cpu = _medians(values)
        line = (f"{name:<20} {wall * 1000:6.1f} ms {wall / floor[0]:5.1f}x "
                f"{cpu * 1000:6.1f} ms {cpu / floor[1]:5.1f}x")
        target = TARGETS.get(name)
        if target is not None:
            ok = wall / floor[0] <= target
            missed = missed or not ok
            line += f"  (target {target:.0f}x: {'ok' if ok else 'MISSED'})"
        print(line)
    return 1 if missed else 0


def _medians(values: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)


if __name__ == "__main__":
    sys.exit(main())
