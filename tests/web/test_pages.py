"""Every page answers, shows what it promises, and pages long lists on the server."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from scheduler.store import file_reports, history, lease
from scheduler.store.db import Database
from scheduler.store.file_reports import FileReport, Source
from scheduler.store.history import LogRow, NewAlert, NewExecution, Status, Trigger
from tests.web.conftest import at, csrf_of, finish

HTML = {"accept": "text/html"}
PAGES = [
    "/",
    "/runs",
    "/workflows",
    "/workflows/etl.toml",
    "/phases/extract:orders",
    "/phases/load?file=etl.toml",
    "/alerts",
    "/files",
    "/about",
    "/sql",
    "/backfill",
    "/fragments/running",
    "/edit/text?file=etl.toml",
    "/edit/phase?file=etl.toml&task=load",
    "/edit/phase?file=etl.toml",
    "/edit/new",
    "/edit/delete?file=etl.toml",
    "/edit/duplicate?file=etl.toml",
    "/login",
    "/logs",
    "/logs?q=anything",
]


def db_of(app: Starlette) -> Database:
    database: Database = app.state.ctx.db
    return database


def queue(
    db: Database,
    task: str = "extract:orders",
    n: int = 1,
    *,
    created: str,
    trigger: Trigger = Trigger.CRON,
    task_time: str | None = None,
) -> list[int]:
    rows = [
        NewExecution(
            task_id=f"chain{i}-{created}",
            file_path="etl.toml",
            task=task,
            task_time=at(task_time or created),
            trigger=trigger,
            info="echo hi",
            meta={},
            not_before=at(created),
        )
        for i in range(n)
    ]
    with db.write() as conn:
        history.insert_executions(conn, rows, at(created))
        return [e.id for e in history.list_executions(conn, task, limit=n)]


@pytest.mark.parametrize("url", PAGES)
def test_every_page_answers_200_without_javascript(client: TestClient, url: str) -> None:
    response = client.get(url, headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert (
        "<noscript>" in response.text
        or "hx-" in response.text
        or "<form" in response.text
        or "<table" in response.text
        or "<h1>" in response.text
    )


def test_unknown_things_are_404(client: TestClient) -> None:
    assert client.get("/runs/999", headers=HTML).status_code == 404
    assert client.get("/phases/nope", headers=HTML).status_code == 404
    assert client.get("/workflows/nope.toml", headers=HTML).status_code == 404
    assert client.get("/edit/text?file=../tomlflow.toml", headers=HTML).status_code == 400
    assert client.get("/api/runs/999").json() == {"error": "no execution with id 999"}


def test_bad_filters_are_one_line_400s(client: TestClient) -> None:
    for url in (
        "/runs?status=nope",
        "/runs?since=yesterday-ish",
        "/runs?before=x",
        "/runs?limit=100000",
        "/workflows?sort=size",
    ):
        response = client.get(url)
        assert response.status_code == 400, url
        assert "\n" not in response.json()["error"]


def test_overview_shows_scheduler_running_failures_alerts_and_today(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    now = app.state.ctx.clock.now()
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    failed, running = queue(db, n=2, created=stamp)
    finish(db, failed, Status.ERROR, stamp, "exit status 3")
    with db.write() as conn:
        history.mark_running(conn, [running], now)
        history.insert_alerts(
            conn,
            [NewAlert(failed, "c", "etl.toml", "extract:orders", now, "failed", "gave up")],
            now,
        )
        lease.acquire(conn, now)
    html = client.get("/", headers=HTML).text
    assert "exit status 3" in html and "gave up" in html
    assert f'href="/runs/{running}"' in html and "1 running" in html
    assert "pid" in html and "running</span>" in html
    assert "Last 90 days" in html and "<svg" in html


def test_runs_filters_and_keyset_pages(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    ids = queue(db, n=5, created="2024-01-02T10:00:00Z")
    queue(db, "load", n=3, created="2024-01-03T10:00:00Z", trigger=Trigger.DEPENDENCY)
    first = client.get("/api/runs?task=extract:orders&limit=2").json()
    assert [r["id"] for r in first["runs"]] == sorted(ids, reverse=True)[:2]
    assert first["count"] == 5 and first["newer"] is None
    second = client.get(f"/api/runs?task=extract:orders&limit=2&before={first['older']}").json()
    assert [r["id"] for r in second["runs"]] == sorted(ids, reverse=True)[2:4]
    back = client.get(f"/api/runs?task=extract:orders&limit=2&after={second['newer']}").json()
    assert back["runs"] == first["runs"]
    assert client.get("/api/runs?trigger=dependency").json()["count"] == 3
    assert client.get("/api/runs?since=2024-01-03").json()["count"] == 3
    assert client.get("/api/runs?until=2024-01-03").json()["count"] == 5
    assert client.get("/api/runs?from=2024-01-03&to=2024-01-04").json()["count"] == 3
    html = client.get("/runs?task=extract:orders&limit=2", headers=HTML).text
    assert "5 matching" in html and f"before={first['older']}" in html


def test_export_csv_and_json_of_the_filtered_set(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    ids = queue(db, n=3, created="2024-01-02T10:00:00Z")
    queue(db, "load", n=2, created="2024-01-02T11:00:00Z")
    body = client.get("/runs/export.csv?task=extract:orders").text
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [int(r["id"]) for r in rows] == sorted(ids, reverse=True)
    assert rows[0]["created_at"] == "2024-01-02T10:00:00.000000Z"
    data = json.loads(client.get("/runs/export.json?task=load").text)
    assert len(data) == 2 and data[0]["task"] == "load"
    assert client.get("/runs/export.xml").status_code == 404


def test_run_page_shows_attempts_chain_meta_and_the_log(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    finish(db, run, Status.COMPLETE, "2024-01-02T10:00:01Z")
    with db.write() as conn:
        history.insert_logs(
            conn,
            [
                LogRow(run, i, at("2024-01-02T10:00:01Z"), "stdout", f"line {i} of output")
                for i in range(3)
            ],
        )
    html = client.get(f"/runs/{run}", headers=HTML).text
    assert "line 2 of output" in html and "3 lines" in html
    assert 'id="follow"' not in html  # finished: nothing to follow
    found = client.get(f"/runs/{run}?q=LINE 1", headers=HTML).text
    assert "line 1 of output" in found and "line 2 of output" not in found
    text = client.get(f"/runs/{run}/log.txt").text
    assert text == "line 0 of output\nline 1 of output\nline 2 of output\n"


def test_log_follow_returns_new_lines_and_stops_when_the_run_ends(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    with db.write() as conn:
        history.mark_running(conn, [run], at("2024-01-02T10:00:00Z"))
        history.insert_logs(conn, [LogRow(run, 0, at("2024-01-02T10:00:00Z"), "stdout", "one")])
    live = client.get(f"/runs/{run}", headers=HTML).text
    assert f'hx-get="/runs/{run}/log?after=0"' in live
    with db.write() as conn:
        history.insert_logs(conn, [LogRow(run, 1, at("2024-01-02T10:00:01Z"), "stdout", "two")])
    more = client.get(f"/runs/{run}/log?after=0").text
    assert "two" in more and "one" not in more and "log?after=1" in more
    finish(db, run, Status.COMPLETE, "2024-01-02T10:00:02Z")
    done = client.get(f"/runs/{run}/log?after=1").text
    assert "hx-get" not in done and 'data-ended="complete"' in done


def test_trigger_form_queues_a_run_with_task_time_and_meta(
    app: Starlette, client: TestClient
) -> None:
    token = csrf_of(client, "/phases/extract:orders")
    response = client.post(
        "/actions/trigger",
        data={
            "csrf": token,
            "task": "extract:orders",
            "file": "etl.toml",
            "at": "2024-03-04",
            "meta": "region=eu\n",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    run_id = int(response.headers["location"].split("?")[0].rsplit("/", 1)[1])
    with db_of(app).read() as conn:
        run = history.get_execution(conn, run_id)
    assert run is not None and run.trigger is Trigger.MANUAL and run.status is Status.QUEUED
    assert run.meta["region"] == "eu" and run.info == "echo extract 2024-03-04"
    bad = client.post(
        "/actions/trigger", data={"csrf": token, "task": "extract:orders", "meta": "no equals sign"}
    )
    assert bad.status_code == 400


def test_retry_and_retry_downstream_buttons(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    token = csrf_of(client, f"/runs/{run}")
    refused = client.post("/actions/retry", data={"csrf": token, "id": str(run)})
    assert refused.status_code == 409  # still queued: a rerun would run it twice
    finish(db, run, Status.ERROR, "2024-01-02T10:00:01Z")
    response = client.post(
        "/actions/retry",
        data={"csrf": token, "id": str(run), "downstream": "1"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    with db.read() as conn:
        runs = history.list_executions(conn, "extract:orders")
    assert runs[0].attempt == 2 and runs[0].trigger is Trigger.RETRY


def test_pause_and_resume_buttons(app: Starlette, client: TestClient) -> None:
    token = csrf_of(client, "/phases/extract:orders")
    form = {"csrf": token, "task": "extract:orders", "file": "etl.toml"}
    client.post("/actions/pause", data=form)
    with db_of(app).read() as conn:
        assert ("etl.toml", "extract:orders") in history.paused_phases(conn)
    assert "Resume" in client.get("/phases/extract:orders", headers=HTML).text
    client.post("/actions/resume", data=form)
    with db_of(app).read() as conn:
        assert history.paused_phases(conn) == set()


def test_phase_page_explains_the_rule_and_lists_the_next_fires(client: TestClient) -> None:
    html = client.get("/phases/extract:orders", headers=HTML).text
    assert "runs at 05:00 every day (UTC)" in html
    assert html.count("05:00:00 <small>") == 10
    assert "scheduled time - 1 day" in html


def test_backfill_preview_then_execute(app: Starlette, client: TestClient) -> None:
    token = csrf_of(client, "/backfill")
    form = {
        "csrf": token,
        "task": "extract:orders",
        "from": "2024-01-01",
        "to": "2024-01-10",
        "execute": "0",
    }
    preview = client.post("/backfill", data=form)
    assert preview.status_code == 200
    assert 'id="backfill-count">10<' in preview.text
    assert "echo extract 2024-01-01" in preview.text and "echo extract 2024-01-10" in preview.text
    with db_of(app).read() as conn:
        assert history.list_executions(conn) == []  # a dry run queues nothing
    done = client.post("/backfill", data={**form, "execute": "1"}, follow_redirects=False)
    assert done.status_code == 303
    with db_of(app).read() as conn:
        assert len(history.list_executions(conn, limit=100)) == 10
    bad = client.post("/backfill", data={**form, "by": "fortnight"})
    assert bad.status_code == 400 and "invalid step" in bad.text


def test_backfill_meta_file_must_be_inside_the_workflow_folder(client: TestClient) -> None:
    token = csrf_of(client, "/backfill")
    response = client.post(
        "/backfill",
        data={
            "csrf": token,
            "task": "extract:orders",
            "at": "2024-01-01",
            "meta_file": "../tomlflow.toml",
        },
    )
    assert response.status_code == 400 and "no such file in the workflow folder" in response.text


def test_workflow_page_shows_source_phases_graph_and_grid(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    finish(db, run, Status.COMPLETE, "2024-01-02T10:00:01Z")
    html = client.get("/workflows/etl.toml", headers=HTML).text
    assert '<span class="c"># the orders pipeline</span>' in html  # highlighted source
    assert 'class="edge"' in html  # extract -> load
    assert f'href="/runs/{run}" title="#{run} complete"' in html  # the grid cell


def test_workflow_graph_of_600_phases_renders(tmp_path_factory: pytest.TempPathFactory) -> None:
    from scheduler.config import load_config
    from scheduler.web.app import create_app
    from tests.conftest import make_site

    phases = ['[[phase]]\ntask = "p0"\nrule = "cron=0 * * * *"\ntemplate = "echo 0"\n']
    phases += [
        f'[[phase]]\ntask = "p{i}"\ndepends_on = "p{(i - 1) // 2}"\ntemplate = "echo {i}"\n'
        for i in range(1, 600)
    ]
    site = make_site(tmp_path_factory.mktemp("big"), {"big.toml": "\n".join(phases)})
    client = TestClient(create_app(load_config(str(site / "tomlflow.toml"))))
    html = client.get("/workflows/big.toml", headers=HTML).text
    assert html.count('class="node') == 600 and html.count('class="edge"') == 599


def test_workflows_search_and_sort(client: TestClient) -> None:
    assert "etl.toml" in client.get("/workflows?q=ETL", headers=HTML).text
    assert "etl.toml</a>" not in client.get("/workflows?q=nothing", headers=HTML).text


def test_alerts_grouped_by_day_and_phase(app: Starlette, client: TestClient) -> None:
    with db_of(app).write() as conn:
        for day in ("2024-01-02T10:00:00Z", "2024-01-02T11:00:00Z", "2024-01-03T10:00:00Z"):
            history.insert_alerts(
                conn,
                [NewAlert(None, "c", "etl.toml", "load", None, "failed", f"at {day}")],
                at(day),
            )
    html = client.get("/alerts", headers=HTML).text
    assert html.index("?day=2024-01-03") < html.index("?day=2024-01-02") and "2\u00d7" in html
    one_day = client.get("/alerts?day=2024-01-02", headers=HTML).text
    assert "at 2024-01-03" not in one_day and "at 2024-01-02T11" in one_day


def test_files_page_shows_matches_and_their_runs(app: Starlette, client: TestClient) -> None:
    now = at("2024-01-02T10:00:00Z")
    row = NewExecution(
        "c1", "etl.toml", "load", now, Trigger.FILE, "echo", {"file": "/in/a.csv"}, now
    )
    with db_of(app).write() as conn:
        history.insert_executions(conn, [row], now)
        file_reports.record(
            conn,
            [
                FileReport("/in/a.csv", Source.WATCH, now, 1),
                FileReport("/in/other.txt", Source.COMMAND, None, 0),
            ],
            now,
        )
    html = client.get("/files", headers=HTML).text
    assert "/in/a.csv" in html and "no match" in html and "/runs/1" in html
    assert "other.txt" not in client.get("/files?path=a.csv", headers=HTML).text


def test_about_shows_counts_and_masks_secrets(tmp_path_factory: pytest.TempPathFactory) -> None:
    from scheduler.config import load_config
    from scheduler.web.app import create_app
    from tests.conftest import make_site

    site = make_site(
        tmp_path_factory.mktemp("about"),
        {},
        '[alerts]\nwebhook = "https://hooks.example/T0/SECRET"\n[web]\ntoken = "tok3n"\n',
    )
    client = TestClient(create_app(load_config(str(site / "tomlflow.toml"))))
    html = client.get("/about", headers={**HTML, "authorization": "Bearer tok3n"}).text
    assert "SECRET" not in html and "tok3n" not in html
    assert "schema version" in html and "executions" in html


def test_sql_console_reads_and_refuses_writes(app: Starlette, client: TestClient) -> None:
    queue(db_of(app), n=2, created="2024-01-02T10:00:00Z")
    token = csrf_of(client, "/sql")
    ok = client.post("/sql", data={"csrf": token, "sql": "SELECT COUNT(*) AS n FROM executions"})
    assert ok.status_code == 200 and "<td>2</td>" in ok.text
    refused = client.post("/sql", data={"csrf": token, "sql": "DELETE FROM executions"})
    assert refused.status_code == 400 and "read-only" in refused.text
    with db_of(app).read() as conn:
        assert len(history.list_executions(conn)) == 2
    download = client.post("/sql.csv", data={"csrf": token, "sql": "SELECT 1 AS a, 'x' AS b"})
    assert download.text == "a,b\n1,x\n"


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_pages_stay_small(client: TestClient) -> None:
    sizes = [len(client.get(url, headers=HTML).content) for url in PAGES]
    assets = sum(
        len(client.get(f"/static/{name}").content) for name in ("style.css", "htmx.min.js")
    )
    assert max(sizes) + assets < 300_000


def test_refresh_button_loads_new_workflow_files(site: Path, client: TestClient) -> None:
    token = csrf_of(client, "/about")
    (site / "workflows" / "new.toml").write_text(
        '[[phase]]\ntask = "fresh"\nrule = "cron=0 1 * * *"\ntemplate = "echo"\n'
    )
    response = client.post("/actions/refresh", data={"csrf": token}, follow_redirects=False)
    assert response.status_code == 303 and "new.toml" in response.headers["location"]
    assert 'href="/workflows/new.toml"' in client.get("/workflows", headers=HTML).text


def test_overview_charts_count_todays_runs_and_the_last_90_days(
    app: Starlette, client: TestClient
) -> None:
    now = app.state.ctx.clock.now()
    hour = now.replace(minute=0, second=0, microsecond=0)
    queue(db_of(app), n=3, created=hour.strftime("%Y-%m-%dT%H:%M:%SZ"))
    queue(db_of(app), created=(hour - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    html = client.get("/", headers=HTML).text
    assert f"<title>{hour:%H}:00: 3 queued</title>" in html
    assert f"<title>{hour - timedelta(days=2):%Y-%m-%d}: 1 runs</title>" in html
    assert "4 runs" in html  # the heat-map's total


def test_sql_console_uses_readonly_database(tmp_path_factory: pytest.TempPathFactory) -> None:
    import sqlite3

    from scheduler.config import load_config
    from scheduler.web.app import create_app
    from tests.conftest import make_site

    root = tmp_path_factory.mktemp("ro")
    other = root / "reporting.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE marker (x TEXT)")
        conn.execute("INSERT INTO marker VALUES ('from the read-only database')")
    site = make_site(root, {})
    config = site / "tomlflow.toml"
    setting = f'[scheduler]\nreadonly_database = "sqlite:///{other}"\n'
    config.write_text(config.read_text().replace("[scheduler]\n", setting))
    client = TestClient(create_app(load_config(str(config))))
    token = csrf_of(client, "/sql")
    found = client.post("/sql", data={"csrf": token, "sql": "SELECT x FROM marker"})
    assert "from the read-only database" in found.text
    assert "reporting.db" in client.get("/about", headers=HTML).text


def test_about_never_shows_a_database_password() -> None:
    from types import SimpleNamespace

    from scheduler.config import Config
    from scheduler.web.ops import masked_config

    url = "postgresql+psycopg://ann:s3cret@db.example/tomlflow"
    shown = masked_config(SimpleNamespace(config=Config(database=url, readonly_database=url)))
    assert "s3cret" not in str(shown) and "db.example" in shown["database"]
