"""Take the dashboard screenshots in docs/ with the browser tests' headless Chromium.

    python -m tests.browser.screenshots docs/

Builds a demo project in a temporary folder (three workflow files, a month of generated
history with some failures, one run still going), serves it on 127.0.0.1 and saves
``screenshot-overview.png`` and ``screenshot-run.png`` at 1280 px wide.
"""

from __future__ import annotations

import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler import planner
from scheduler.config import load_config
from scheduler.store import history, lease
from scheduler.store.db import Database
from scheduler.store.history import Finish, LogRow, NewAlert, NewExecution, Status, Trigger
from scheduler.web.app import create_app
from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, serve, shutdown
from tests.conftest import make_site

FILES = {
    "orders.toml": """\
# orders: extract at five, load when it completes
[[phase]]
task = "extract:orders"
rule = "cron=0 5 * * *&offset=-24h"
template = "extract.sh {yyyy}-{mm}-{dd}"

[[phase]]
task = "load:orders"
depends_on = "extract:orders"
retry = 2
template = "load.sh {yyyy}-{mm}-{dd}"

[[phase]]
task = "report:daily"
depends_on = "load:orders"
template = "report.sh {yyyy}-{mm}-{dd}"
""",
    "billing.toml": """\
[[phase]]
task = "invoices"
rule = "cron=0 * * * *"
template = "invoices.sh {yyyy}{mm}{dd}T{hh}"

[[phase]]
task = "ledger"
depends_on = "invoices"
template = "ledger.sh {yyyy}{mm}{dd}T{hh}"
""",
    "marketing/feeds.toml": """\
[[phase]]
task = "feeds:pull"
rule = "cron=*/30 * * * *"
template = "pull.sh"
""",
}
TASKS = [
    ("orders.toml", "extract:orders"),
    ("orders.toml", "load:orders"),
    ("billing.toml", "invoices"),
    ("billing.toml", "ledger"),
    ("marketing/feeds.toml", "feeds:pull"),
]


def chain(db: Database, start: datetime) -> int:
    """extract -> load -> report, one chain; returns the load's id."""
    ids: list[int] = []
    at = start
    for task, seconds in (("extract:orders", 95), ("load:orders", 412), ("report:daily", 40)):
        row = NewExecution(
            "7f3a9c",
            "orders.toml",
            task,
            start - timedelta(hours=5),
            Trigger.CRON if not ids else Trigger.DEPENDENCY,
            f"{task}.sh",
            {"workflow": "orders.toml", "rows": "1204319"},
            at,
            parent_execution_id=ids[-1] if ids else None,
        )
        with db.write() as conn:
            history.insert_executions(conn, [row], at)
            run = history.list_executions(conn, limit=1)[0]
            history.mark_running(conn, [run.id], at)
            end = at + timedelta(seconds=seconds)
            history.record_finishes(conn, [Finish(run.id, Status.COMPLETE, "", 0, at, end)])
        ids.append(run.id)
        at = end + timedelta(seconds=1)
    return ids[1]


def seed(db: Database, now: datetime) -> int:
    """A month of history; returns the id of a finished run with a log."""
    rng = random.Random(7)
    start = now - timedelta(days=30)
    for hour in range(30 * 24):
        when = start + timedelta(hours=hour)
        for file_path, task in TASKS:
            if rng.random() < 0.6:
                continue
            row = NewExecution(
                f"c{hour}{task}",
                file_path,
                task,
                when,
                Trigger.CRON,
                f"{task}.sh",
                {"workflow": file_path},
                when,
            )
            with db.write() as conn:
                history.insert_executions(conn, [row], when)
                run = history.list_executions(conn, limit=1)[0]
                roll = rng.random()
                status = (
                    Status.ERROR if roll < 0.05 else Status.WARN if roll < 0.08 else Status.COMPLETE
                )
                took = timedelta(seconds=rng.randint(5, 900))
                msg = "exit status 1: connection reset by peer" if status is Status.ERROR else ""
                history.mark_running(conn, [run.id], when)
                history.record_finishes(
                    conn, [Finish(run.id, status, msg, int(bool(msg)), when, when + took)]
                )
                if status is Status.ERROR and rng.random() < 0.5:
                    history.insert_alerts(
                        conn,
                        [NewAlert(run.id, run.task_id, file_path, task, when, "failed", msg)],
                        when + took,
                    )
    shown = chain(db, now - timedelta(hours=2))
    with db.write() as conn:
        history.insert_logs(
            conn,
            [
                LogRow(shown, i, now, "stderr" if "warn" in line else "stdout", line)
                for i, line in enumerate(
                    [
                        "load.sh: reading s3://warehouse/orders/2026-11-30/",
                        "rows read: 1,204,331",
                        "warn: 12 rows without a customer id, skipped",
                        "rows written: 1,204,319",
                        "vacuum analyze orders_daily",
                        "done in 412 s",
                    ]
                )
            ],
        )
        live = NewExecution(
            "live", "billing.toml", "invoices", now, Trigger.CRON, "invoices.sh", {}, now
        )
        history.insert_executions(conn, [live], now - timedelta(minutes=3))
        history.mark_running(
            conn, [history.list_executions(conn, limit=1)[0].id], now - timedelta(minutes=3)
        )
        lease.acquire(conn, now)
    return shown


def plan(context: Any) -> None:
    """The next fire of every cron phase, as a running scheduler stores it."""
    now = datetime.now(UTC)
    states = [
        planner.plan_cron(spec, None, now, context.config.timezone).state
        for spec in context.catalog.phases()
        if spec.runnable and spec.rule is not None and spec.rule.cron is not None
    ]
    with context.db.write() as conn:
        history.save_phase_states(conn, states)


def main(target: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "workflows" / "marketing").mkdir(parents=True)
        site = make_site(Path(scratch), FILES)
        config = load_config(str(site / "tomlflow.toml"))
        app = create_app(config)
        run_id = seed(app.state.ctx.db, datetime.now(UTC))
        plan(app.state.ctx)
        served = serve(app)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,1400",
            f"--user-data-dir={Path(scratch) / 'chrome'}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            for url, name in (("/", "overview"), (f"/runs/{run_id}", "run")):
                driver.get(served.url + url)
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1280, min(height + 90, 2400))
                driver.save_screenshot(str(target / f"screenshot-{name}.png"))
        finally:
            driver.quit()
            shutdown(served)
            app.state.ctx.close()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
