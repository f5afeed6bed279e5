"""How fast the dashboard answers at 1,000,000 executions (SQLite).

    python benchmarks/web.py [--rows 1000000] [--phases 1000] [--db PATH] [--repeat 7]

Builds the views benchmark's database (benchmarks/views.py: 1,000 phases in 50 files, one
execution per phase per hour), writes the matching workflow files, and serves the app
in-process (Starlette's TestClient: the server's own time, no network). For every page and API
listing it prints the median milliseconds of ``--repeat`` runs after one warm-up, the page's
bytes with its assets, and whether it met its target (100 ms per page, 50 ms for /metrics,
300 KB per page with assets). The clock is set to the newest hour of generated history, so
"today" and the 90-day heat-map have data. Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

import views

from scheduler.config import Config
from scheduler.web.app import create_app

PAGE_MS, METRICS_MS, PAGE_BYTES = 100.0, 50.0, 300_000
ASSETS = ("/static/style.css", "/static/htmx.min.js")


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def write_workflows(folder: Path, phases: int, files: int) -> None:
    """The files whose phases views.build stored: per file a cron root and a chain."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        blocks = []
        for i in range(f, phases, files):
            lines = ["[[phase]]", f'task = "topic{i}:job"']
            if i < files:
                lines.append('rule = "cron=0 * * * *"')
            else:
                lines.append(f'depends_on = "topic{i - files}"')
            lines += ['template = "run.sh {yyyy}-{mm}-{dd}"', "retry = 2", ""]
            blocks.append("\n".join(lines))
        (folder / f"file{f}.toml").write_text("\n".join(blocks), encoding="utf-8")


def forget_phases(path: Path) -> None:
    """views.build stores phases without their files' rows; drop them so that the app's
    first refresh loads them from the files written above, as a real site's are."""
    conn = sqlite3.connect(path)
    with conn:
        if not conn.execute("SELECT COUNT(*) FROM workflow_files").fetchone()[0]:
            conn.execute("DELETE FROM workflow_phases")
    conn.close()


def urls(newest_id: int) -> list[tuple[str, float]]:
    old = max(1, newest_id // 2)
    """Every page and API listing, with its target in milliseconds."""
    pages = [
        "/",
        "/runs",
        "/runs?status=error",
        "/runs?task=topic500:job",
        "/runs?trigger=cron&since=2024-02-10",
        f"/runs?before={old}",
        f"/runs/{newest_id - 10}",
        f"/runs/{newest_id - 10}/log?after=-1",
        "/workflows",
        "/workflows/file7.toml",
        "/phases/topic7:job?file=file7.toml",
        "/alerts",
        "/files",
        "/about",
        "/sql",
        "/backfill",
        "/fragments/running",
        "/edit/text?file=file7.toml",
        "/api/runs",
        "/api/runs?status=error&limit=200",
        f"/api/runs/{newest_id - 10}",
        "/api/phases",
        "/api/next",
        "/info",
        "/healthz",
    ]
    return [(u, PAGE_MS) for u in pages] + [("/metrics", METRICS_MS)]


def metrics_uncached(client: TestClient, repeat: int) -> float:
    """/metrics with its cache emptied before every run: the database reads and rendering."""
    cache = client.app.state.ctx.metrics  # type: ignore[attr-defined]
    times = []
    for _ in range(repeat):
        cache.read_at = float("-inf")
        start = time.perf_counter()
        client.get("/metrics")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(client: TestClient, url: str, repeat: int) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` GETs after a warm-up, and the body's bytes."""
    first = client.get(url, headers={"accept": "text/html"})
    if first.status_code != 200:
        raise SystemExit(f"{url}: {first.status_code} {first.text[:200]}")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        client.get(url, headers={"accept": "text/html"})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), len(first.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--phases", type=int, default=1_000)
    parser.add_argument("--db", type=Path, help="Build (or reuse, if it exists) this file.")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.db or Path(scratch) / "bench.db"
        if not path.exists():
            start = time.perf_counter()
            views.build(path, args.rows, args.phases)
            print(f"built {args.rows:,} executions in {time.perf_counter() - start:.0f}s")
        folder = Path(scratch) / "workflows"
        write_workflows(folder, args.phases, views.FILES)
        config = Config(workflows=folder, database=f"sqlite:///{path}")
        forget_phases(path)
        hours = args.rows // args.phases
        newest = datetime(2024, 1, 1, tzinfo=UTC).timestamp() + (hours - 1) * 3600 + 1800
        app = create_app(config, FixedClock(datetime.fromtimestamp(newest, UTC)))
        missed = run(TestClient(app), args.rows, args.repeat)
        app.state.ctx.close()
    if missed:
        print(f"missed targets: {', '.join(missed)}")
        sys.exit(1)


def run(client: TestClient, rows: int, repeat: int) -> list[str]:
    assets = sum(len(client.get(a).content) for a in ASSETS)
    for url, what in (("/", "the 90-day heat-map and today's hours"), ("/metrics", "metrics")):
        cold = time.perf_counter()
        client.get(url)
        ms = (time.perf_counter() - cold) * 1000
        print(f"first {url} (reads {what}, then cached): {ms:.0f} ms")
    print(f"{'median ms':>10} {'target':>7} {'KB+assets':>10}  verdict  url")
    missed = []
    for url, target in urls(rows):
        ms, size = measure(client, url, repeat)
        total = size + (
            assets if not url.startswith(("/api", "/metrics", "/info", "/health")) else 0
        )
        ok = ms <= target and (total <= PAGE_BYTES or url == "/metrics")
        print(f"{ms:10.1f} {target:7.0f} {total / 1000:10.1f}  {'ok' if ok else 'MISSED':7}  {url}")
        if not ok:
            missed.append(url)
    uncached = metrics_uncached(client, repeat)
    print(f"/metrics uncached (its 5 s cache emptied each time): {uncached:.1f} ms")
    return missed


if __name__ == "__main__":
    main()
