"""Per-row benchmarks: the pure Python a tick runs for each execution, without the database.

Run: ``python benchmarks/rows.py [--quick]``. Each figure is the median of several runs, in
microseconds of CPU time per row, beside a floor measured in the same run: building the same
objects (``Launch``, ``NewExecution``) directly, with nothing decided. The ratio to the floor
is what is checked: it says how much per-row work is left above the unavoidable, and it holds
on a slower or busier machine. Exits 1 when a ratio is over its target.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler import dispatcher, followup, planner
from scheduler.config import Config, WorkerConfig
from scheduler.executors import Launch
from scheduler.loader import RawPhase, normalise_task
from scheduler.store.history import Execution, NewExecution, PhaseState, Status, Trigger
from scheduler.validation import PhaseSpec, validate_file

NOW = datetime(2024, 1, 3, 12, 0, 0, tzinfo=UTC)
WORKFLOWS = Path("/nonexistent/workflows")
TOKENS = "run --day={yyyy}-{mm}-{dd}T{hh} --in={meta:file} --host={host}"
MISSED: list[str] = []


def specs(rules: list[str], template: str, topic: str = "t", parent: str = "") -> list[PhaseSpec]:
    """Runnable phases of one file, one per rule, with the same template (``topic:p0``…),
    after a ``parent`` phase they depend on, when one is named."""
    raws = [RawPhase(task=parent, rule="files=never/*", template=template)] if parent else []
    raws += [
        RawPhase(
            task=normalise_task(f"{topic}:p{i}", rule),
            rule=rule,
            template=template,
            depends_on=parent,
        )
        for i, rule in enumerate(rules)
    ]
    found = validate_file("bench.toml", raws)
    assert all(s.runnable for s in found), found[0].status
    return found


def execution(spec: PhaseSpec, info: str, meta: dict[str, str]) -> Execution:
    return Execution(
        id=1, task_id="chain", file_path=spec.file_path, task=spec.task, topic=spec.topic,
        job=spec.job, task_time=NOW, attempt=1, trigger=Trigger.MANUAL, status=Status.RUNNING,
        info=info, meta=meta, msg="", exit_code=None, created_at=NOW, started_at=NOW,
        ended_at=None, not_before=NOW, parent_execution_id=None, pid=None,
    )  # fmt: skip


def median_us(
    work: Callable[[], object], rows: int, runs: int, setup: Callable[[], object] = tuple
) -> float:
    """Median over ``runs`` of the CPU time ``work`` takes, per row, in microseconds, each run
    after an untimed ``setup``. CPU time, not wall time: other processes on the machine then
    barely move the figure."""
    times = []
    for _ in range(runs):
        setup()
        started = time.process_time()
        work()
        times.append((time.process_time() - started) / rows * 1e6)
    return statistics.median(times)


def launches(count: int, runs: int) -> None:
    """``build_launch`` for ``count`` queued executions, per template and worker kind."""
    python = Config(workers={"t": WorkerConfig(python="benchmarks.rows:median_us")})
    shell = Config(workers={"t": WorkerConfig(shell=True)})
    cases = [
        ("template `noop`, python worker", "noop", python, 3.5),
        (f"template `{TOKENS}`, argv", TOKENS, Config(), 8.0),
        (f"template `{TOKENS}`, shell", TOKENS, shell, 7.0),
    ]
    meta = {"file": "/data/my file.csv", "workflow": "bench.toml", "job": "p0"}
    for label, template, config, target in cases:
        (spec,) = specs(["files=never/*"], template)
        (row,) = planner.new_rows(spec, NOW, meta, Trigger.MANUAL, NOW, WORKFLOWS, task_id="c")
        queued = [execution(spec, row.info, dict(row.meta)) for _ in range(count)]
        launch = functools.partial(_launch_all, queued, spec, config)
        cost = median_us(launch, count, runs)
        floor = median_us(functools.partial(_launch_floor, queued), count, runs)
        _report(f"build_launch, {label}", cost, floor, target)


def _launch_all(queued: list[Execution], spec: PhaseSpec, config: Config) -> list[Launch]:
    return [dispatcher.build_launch(e, spec, config) for e in queued]


def _launch_floor(queued: list[Execution]) -> list[Launch]:
    return [
        Launch(e.id, e.task_id, e.topic, e.job, e.info, e.task_time, e.attempt, e.meta, e.info)
        for e in queued
    ]


def fan_out(count: int, runs: int) -> None:
    """``after_end`` of a parent that completes and releases ``count`` children."""
    for label, template, target in (("`noop`", "noop", 4.0), (f"`{TOKENS}`", TOKENS, 7.0)):
        parent, *children = specs([""] * count, template, parent="root")
        done = execution(parent, "noop", {"workflow": "bench.toml", "file": "/data/x.csv"})
        release = functools.partial(
            followup.after_end, done, Status.COMPLETE, "", {}, parent, children, NOW, 0.0, WORKFLOWS
        )
        cost = median_us(release, count, runs)
        floor = median_us(functools.partial(_rows_floor, children, done.meta), count, runs)
        _report(f"after_end releasing {count} children, template {label}", cost, floor, target)


def cron_burst(count: int, runs: int) -> None:
    """``plan_cron`` then ``rows_for_fire`` for ``count`` phases due in the same second: with
    one schedule (in two zones), and with a schedule of its own each, all due at 12:00 UTC.
    Each run is another day, its phases' states planned a second earlier (untimed), so the
    next fire after this one is found as in a real burst, not remembered from the last run."""
    zoned = [(z, NOW.astimezone(ZoneInfo(z)).hour) for z in ("UTC", "Europe/Berlin")]
    cases: list[tuple[str, list[str], float | None]] = [
        (f"tz {zone}", [f"cron=0 0 {hour} * * *&tz={zone}"] * count, 14.0) for zone, hour in zoned
    ]
    others = [(h, m) for h in range(24) for m in range(1, 60) if h != NOW.hour][:count]
    own = [f"cron=0 0,{m} {NOW.hour},{h} * * *" for h, m in others]
    cases.append(("a schedule of its own each", own, 30.0))
    for label, rules, target in cases:
        phases = specs(rules, "noop", topic="c")
        burst, setup = _burst(phases)
        cost = median_us(burst, count, runs, setup)
        floor = median_us(functools.partial(_rows_floor, phases, {}), count, runs)
        _report(f"cron burst of {count} phases, {label}", cost, floor, target)


def _burst(phases: list[PhaseSpec]) -> tuple[Callable[[], object], Callable[[], object]]:
    """The burst to time, and its setup: the next day's states as of a second before noon."""
    days = itertools.count(1)
    moment = [NOW]
    states: list[PhaseState] = []

    def setup() -> None:
        moment[0] = NOW + timedelta(days=next(days))
        before = moment[0] - timedelta(seconds=1)
        states[:] = [planner.plan_cron(s, None, before, "UTC").state for s in phases]

    def burst() -> None:
        for spec, state in zip(phases, states, strict=True):
            plan = planner.plan_cron(spec, state, moment[0], "UTC")
            for fire in plan.fires:
                planner.rows_for_fire(fire, moment[0], WORKFLOWS)

    return burst, setup


def _rows_floor(phases: list[PhaseSpec], meta: dict[str, str]) -> list[NewExecution]:
    return [
        NewExecution("c", s.file_path, s.task, NOW, Trigger.DEPENDENCY, s.template, dict(meta), NOW)
        for s in phases
    ]


def _report(label: str, cost: float, floor: float, target: float | None) -> None:
    ratio = cost / floor
    goal = f"target {target:g}x" if target else "no target"
    print(f"{label}: {cost:.2f} us/row (floor {floor:.2f} us/row, {ratio:.1f}x; {goal})")
    if target and ratio > target:
        MISSED.append(label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10x fewer rows, fewer runs")
    args = parser.parse_args()
    count, runs = (100, 5) if args.quick else (1000, 15)
    launches(count, runs)
    fan_out(count, runs)
    cron_burst(count, runs)
    if MISSED:
        print(f"over target: {'; '.join(MISSED)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
