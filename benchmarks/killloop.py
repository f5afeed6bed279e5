"""Fault injection: ``kill -9`` a real daemon over and over while commands run; count what broke.

A 200-phase workload (``--roots`` cron roots firing every ``--every`` seconds with
``catchup=all``, each the head of a chain of ``--length`` phases that each sleep ``--sleep``
seconds) runs under ``tomlflow run`` in a temporary folder. The daemon is killed with SIGKILL at
random moments (``--kills`` times, 0.3 to 3 s after it took the lease), restarted after each,
and then left to run until every fired chain has finished. Then the database is read:

- lost fires: cron times of a root between its first and last recorded fire that never fired;
- false errors: executions recorded ``error`` (no command here can fail);
- double completions: a phase + task time completed more than once;
- run more than once: a phase + task time whose command started more than once (every
  command appends a line to a ledger file before it sleeps);
- incomplete chains: a phase + task time of a fired chain that never completed;
- stuck rows: executions still ``running`` or ``queued`` after the drain.

Exit 1 when any is not 0. Usage: ``python benchmarks/killloop.py [--kills 22] [--seed 1]``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from scheduler.store.db import Database
from scheduler.store.schema import executions, scheduler_lease
from scheduler.tasktime import from_iso

PY = sys.executable


def workflow(roots: int, length: int, every: int, sleep: float, ledger: Path) -> str:
    """Every command appends its phase and task time to ``ledger``, then sleeps."""
    run = f"echo $TOMLFLOW_TOPIC $TOMLFLOW_TASK_TIME >> {ledger}; sleep {sleep}"
    template = f"sh -c '{run}'"
    text = ""
    for r in range(roots):
        rule = f"cron=*/{every} * * * * *&catchup=all"
        text += f'[[phase]]\ntask = "r{r}l0"\nrule = "{rule}"\ntemplate = "{template}"\n\n'
        for link in range(1, length):
            text += (
                f'[[phase]]\ntask = "r{r}l{link}"\ndepends_on = "r{r}l{link - 1}"\n'
                f'template = "{template}"\n\n'
            )
    return text


def site(root: Path, args: argparse.Namespace) -> Path:
    (root / "workflows").mkdir()
    text = workflow(args.roots, args.length, args.every, args.sleep, root / "ran.log")
    (root / "workflows" / "load.toml").write_text(text)
    (root / "tomlflow.toml").write_text(
        '[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///tomlflow.db"\n'
        f'refresh = "1h"\nmax_workers = {args.workers}\nshutdown_grace = "5s"\n'
    )
    return root / "tomlflow.toml"


def daemon(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "scheduler", "run", "--config", str(config)],
        cwd=config.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rows(db: Database) -> list[dict[str, object]]:
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(select(executions))]


def holds_lease(db: Database, pid: int) -> bool:
    with db.read() as conn:
        return conn.execute(select(scheduler_lease.c.pid)).scalar() == pid


def running(db: Database) -> bool:
    return any(r["status"] == "running" for r in rows(db))


def kill_loop(config: Path, db: Database, args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    for n in range(args.kills):
        proc = daemon(config)
        while not holds_lease(db, proc.pid):  # the random moment counts from its start
            time.sleep(0.02)
        time.sleep(rng.uniform(0.3, 3.0))
        proc.kill()
        proc.wait()
        print(f"kill {n + 1}: daemon {proc.pid} killed, commands running: {running(db)}")


def drain(config: Path, db: Database, args: argparse.Namespace) -> None:
    """Run the daemon, stop it firing after ``--drain`` seconds (SIGTERM would requeue), and
    wait until no execution is running or queued."""
    proc = daemon(config)
    time.sleep(args.drain)
    proc.kill()  # one more kill: the last daemon's work is finished by recovery below
    proc.wait()
    end = time.monotonic() + 300
    # A run --once finishes what is queued without firing cron beyond what is due now.
    while time.monotonic() < end:
        subprocess.run(
            [PY, "-m", "scheduler", "run", "--once", "--config", str(config)],
            cwd=config.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if not any(r["status"] in ("running", "queued") for r in rows(db)):
            return


def report(db: Database, ledger: Path, args: argparse.Namespace) -> int:
    found = rows(db)
    ran = Counter(ledger.read_text().splitlines())
    by_status = Counter(str(r["status"]) for r in found)
    complete = Counter((r["task"], r["task_time"]) for r in found if r["status"] == "complete")
    doubles = sum(1 for n in complete.values() if n > 1)
    fired: dict[str, set[str]] = {}
    for r in found:
        if str(r["task"]).endswith("l0") and r["trigger"] == "cron":
            fired.setdefault(str(r["task"]), set()).add(str(r["task_time"]))
    lost = 0
    for times in fired.values():
        stamps = sorted(from_iso(t) for t in times)
        step = timedelta(seconds=args.every)
        expected = int((stamps[-1] - stamps[0]) / step) + 1
        lost += expected - len(stamps)
    incomplete = sum(
        1
        for root, times in fired.items()
        for t in times
        for link in range(args.length)
        if (root[:-1] + str(link), t) not in complete
    )
    stuck = by_status["running"] + by_status["queued"]
    print(f"executions: {len(found)} {dict(by_status)}")
    print(f"fires: {sum(len(t) for t in fired.values())} over {len(fired)} roots")
    print(f"lost fires: {lost}")
    print(f"false errors: {by_status['error']}")
    print(f"double completions: {doubles}")
    twice = sum(n > 1 for n in ran.values())
    print(f"commands started: {sum(ran.values())}; run more than once: {twice}")
    print(f"incomplete chains (phase + task time never completed): {incomplete}")
    print(f"stuck rows: {stuck}")
    return 1 if lost or by_status["error"] or doubles or incomplete or stuck or twice else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=22)
    parser.add_argument("--roots", type=int, default=10)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--every", type=int, default=5, help="seconds between a root's fires")
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--drain", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = site(Path(tmp), args)
        db = Database(f"sqlite:///{Path(tmp) / 'tomlflow.db'}")
        try:
            started = time.monotonic()
            kill_loop(config, db, args)
            drain(config, db, args)
            print(f"{args.kills + 1} kills in {time.monotonic() - started:.0f}s")
            return report(db, Path(tmp) / "ran.log", args)
        finally:
            db.close()


if __name__ == "__main__":
    sys.exit(main())
