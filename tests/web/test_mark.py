"""Marking an execution complete or error from the dashboard and the API (`tomlflow mark`)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from scheduler.store import history, lease
from scheduler.store.history import Status, Trigger
from tests.web.conftest import csrf_of, finish
from tests.web.test_pages import HTML, db_of, queue


def test_mark_complete_releases_the_children_and_names_the_dashboard(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    finish(db, run, Status.ERROR, "2024-01-02T10:00:01Z", "exit status 1")
    token = csrf_of(client, f"/runs/{run}")
    response = client.post(
        "/actions/mark",
        data={"csrf": token, "id": str(run), "result": "complete", "msg": "fixed by hand"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and "released+1+child" in response.headers["location"]
    with db.read() as conn:
        marked = history.get_execution(conn, run)
        [child] = history.list_executions(conn, "load")
    assert marked is not None and marked.status is Status.COMPLETE
    assert marked.msg == "marked complete by web (testclient): fixed by hand"
    assert child.trigger is Trigger.DEPENDENCY and child.parent_execution_id == run
    assert "Mark complete" in client.get(f"/runs/{run}", headers=HTML).text


def test_mark_error_queues_no_retry(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    [run] = queue(db, "load", created="2024-01-02T10:00:00Z")  # load has retry = 1
    finish(db, run, Status.COMPLETE, "2024-01-02T10:00:01Z")
    response = client.post("/api/mark", json={"id": run, "result": "error"})
    assert response.json() == {
        "execution_id": run,
        "status": "error",
        "was": "complete",
        "changed": True,
        "released": 0,
    }
    with db.read() as conn:
        assert [e.id for e in history.list_executions(conn)] == [run]
    again = client.post("/api/mark", json={"id": run, "result": "error"}).json()
    assert again["changed"] is False


def test_mark_is_refused_for_queued_runs_and_runs_a_live_scheduler_owns(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    [queued] = queue(db, created="2024-01-02T10:00:00Z")
    refused = client.post("/api/mark", json={"id": queued, "result": "complete"})
    assert refused.status_code == 409 and "cancel it instead" in refused.json()["error"]
    now = app.state.ctx.clock.now()
    with db.write() as conn:
        history.mark_running(conn, [queued], now)
        lease.acquire(conn, now)
    owned = client.post("/api/mark", json={"id": queued, "result": "error"})
    assert owned.status_code == 409 and "cancel it first" in owned.json()["error"]
    assert client.post("/api/mark", json={"id": 999, "result": "error"}).status_code == 404
    assert client.post("/api/mark", json={"id": queued, "result": "skipped"}).status_code == 400
