"""The JSON API and flowlord's endpoints: reads, actions, and JSON errors."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from scheduler.store import history
from scheduler.store.history import LogRow, Status
from tests.web.conftest import at, finish
from tests.web.test_pages import db_of, queue


def test_phases_lists_definition_status_and_next_fire(client: TestClient) -> None:
    phases = client.get("/api/phases").json()["phases"]
    assert [p["task"] for p in phases] == ["extract:orders", "load"]
    assert phases[0]["rule"] == "cron=0 5 * * *&offset=-24h" and phases[0]["paused"] == 0
    assert client.get("/api/phases?file=nope.toml").json()["phases"] == []


def test_one_run_and_its_log_lines_after_a_sequence_number(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    with db.write() as conn:
        history.insert_logs(
            conn, [LogRow(run, i, at("2024-01-02T10:00:00Z"), "stdout", f"l{i}") for i in range(5)]
        )
    one = client.get(f"/api/runs/{run}").json()
    assert one["run"]["id"] == run and one["attempts"] == [run] and one["log_lines"] == 5
    logs = client.get(f"/api/runs/{run}/logs?after=2").json()
    assert [x["line"] for x in logs["lines"]] == ["l3", "l4"]
    assert logs["last_seq"] == 4 and logs["finished"] is False
    assert client.get(f"/api/runs/{run}/logs?after=4").json()["last_seq"] == 4


def test_next_fires(client: TestClient) -> None:
    data = client.get("/api/next?n=3").json()["phases"]
    assert len(data) == 1 and data[0]["task"] == "extract:orders"
    assert len(data[0]["next"]) == 3 and all(
        t.endswith("T05:00:00.000000Z") for t in data[0]["next"]
    )
    assert client.get("/api/next?task=nope").status_code == 404


def test_trigger_retry_pause_resume(app: Starlette, client: TestClient) -> None:
    queued = client.post(
        "/api/trigger", json={"task": "extract:orders", "at": "2024-01-05", "meta": {"k": "v"}}
    )
    assert queued.status_code == 201
    run = queued.json()["queued"][0]
    assert run["task_time"] == "2024-01-05T00:00:00.000000Z" and run["meta"]["k"] == "v"
    busy = client.post("/api/retry", json={"id": run["id"]})
    assert busy.status_code == 409 and "still queued" in busy.json()["error"]
    finish(db_of(app), run["id"], Status.ERROR, "2024-01-05T00:00:00Z")
    again = client.post("/api/retry", json={"id": run["id"], "downstream": True})
    assert again.status_code == 201 and again.json()["attempt"] == 2
    paused = client.post("/api/pause", json={"task": "extract:orders"}).json()
    assert paused == {
        "file_path": "etl.toml",
        "task": "extract:orders",
        "paused": True,
        "changed": True,
    }
    assert client.post("/api/pause", json={"task": "extract:orders"}).json()["changed"] is False
    assert client.post("/api/resume", json={"task": "extract:orders"}).json()["changed"] is True


def test_backfill_is_a_dry_run_unless_execute(app: Starlette, client: TestClient) -> None:
    body = {"task": "extract:orders", "from": "2024-01-01", "to": "2024-01-03"}
    dry = client.post("/api/backfill", json=body).json()
    assert dry["executed"] is False and dry["count"] == 3
    assert dry["first"]["info"] == "echo extract 2024-01-01"
    with db_of(app).read() as conn:
        assert history.list_executions(conn) == []
    done = client.post("/api/backfill", json={**body, "execute": True})
    assert done.status_code == 201
    with db_of(app).read() as conn:
        assert len(history.list_executions(conn)) == 3


def test_sql_is_read_only(client: TestClient) -> None:
    ok = client.post("/api/sql", json={"sql": "SELECT task FROM workflow_phases ORDER BY task"})
    assert ok.json() == {
        "columns": ["task"],
        "rows": [["extract:orders"], ["load"]],
        "truncated": False,
    }
    refused = client.post("/api/sql", json={"sql": "DROP TABLE executions"})
    assert refused.status_code == 409 and "read-only" in refused.json()["error"]


def test_errors_are_json_never_a_trace(client: TestClient) -> None:
    cases = [
        (
            client.post(
                "/api/trigger", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
        ),
        (client.post("/api/trigger", json=[1, 2]), 400),
        (client.post("/api/trigger", json={"task": "nope"}), 404),
        (client.post("/api/trigger", json={"task": "load", "meta": "x"}), 400),
        (client.post("/api/retry", json={}), 400),
        (client.post("/api/retry", json={"id": 12345}), 404),
        (client.post("/api/backfill", json={"task": "load", "at": "soon"}), 400),
        (client.get("/api/runs?status=bogus"), 400),
        (client.get("/api/nothing"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert list(body) == ["error"] and "Traceback" not in body["error"]


def test_flowlord_info_refresh_backload_and_task(app: Starlette, client: TestClient) -> None:
    info = client.get("/info").json()
    entry = info["workflow"]["etl.toml"]["extract:orders"]
    assert info["app_name"] == "tomlflow" and entry["child"] == ["load"]
    assert entry["schedule"] == ["cron=0 5 * * *&offset=-24h"]
    assert client.get("/refresh").json()["files"] == []
    dry = client.post(
        "/backload",
        json={
            "Task": "extract",
            "Job": "orders",
            "From": "2024-01-01",
            "To": "2024-01-02",
            "By": "day",
        },
    ).json()
    assert dry["Count"] == 2 and dry["Status"].startswith("DRY RUN ONLY")
    assert dry["Tasks"][0]["type"] == "extract" and dry["Tasks"][0]["job"] == "orders"
    done = client.post(
        "/backload", json={"task": "extract:orders", "at": "2024-01-01", "execute": True}
    ).json()
    assert done["Status"].startswith("Executed")
    with db_of(app).read() as conn:
        [row] = history.list_executions(conn)
    assert client.get(f"/task/{row.id}").json()["result"] == "queued"
    assert client.get(f"/task/{row.task_id}").json()["id"] == row.id
    assert client.get("/task/nope").status_code == 404


def test_next_fires_follow_the_engine_pause_and_catch_up(
    app: Starlette, client: TestClient
) -> None:
    from datetime import timedelta

    from scheduler import planner
    from scheduler.store.history import PhaseState

    context = app.state.ctx
    now = context.clock.now()
    spec = next(s for s in context.catalog.phases() if s.task == "extract:orders")
    down_since = now - timedelta(days=3)  # the scheduler last looked three days ago
    state = PhaseState(
        "etl.toml",
        "extract:orders",
        down_since,
        down_since,
        planner.signature(spec, "UTC"),
        None,
        False,
    )
    with db_of(app).write() as conn:
        history.save_phase_states(conn, [state])
    [phase] = client.get("/api/next?n=3").json()["phases"]
    assert len(phase["next"]) == 3 and len(phase["late"]) == 1  # catchup=latest: one, now
    html = client.get("/phases/extract:orders").text
    assert "missed: fires at the next tick" in html
    client.post("/api/pause", json={"task": "extract:orders"})
    assert client.get("/api/next").json()["phases"][0]["next"] == []
    assert "Paused: no cron fire" in client.get("/phases/extract:orders").text
