"""Cancelling from the dashboard and the API (`tomlflow cancel`)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from scheduler.store import history
from scheduler.store.history import Status
from tests.web.conftest import csrf_of, finish
from tests.web.test_pages import HTML, db_of, queue


def test_cancel_a_queued_run_from_its_page(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    html = client.get(f"/runs/{run}", headers=HTML).text
    assert 'id="cancel"' in html
    response = client.post(
        "/actions/cancel",
        data={"csrf": csrf_of(client, f"/runs/{run}"), "id": str(run)},
        follow_redirects=False,
    )
    assert response.status_code == 303 and "cancelled" in response.headers["location"]
    with db.read() as conn:
        cancelled = history.get_execution(conn, run)
    assert cancelled is not None and cancelled.status is Status.CANCELLED
    assert cancelled.msg == "cancelled by user"


def test_cancel_a_running_run_from_the_overview_asks_the_scheduler(
    app: Starlette, client: TestClient
) -> None:
    db = db_of(app)
    [run] = queue(db, created="2024-01-02T10:00:00Z")
    with db.write() as conn:
        history.mark_running(conn, [run], app.state.ctx.clock.now())
    overview = client.get("/", headers=HTML).text
    assert 'action="/actions/cancel"' in overview
    response = client.post(
        "/actions/cancel",
        data={"csrf": csrf_of(client), "id": str(run), "back": "/"},
        follow_redirects=False,
    )
    assert response.headers["location"].startswith("/?done=the+scheduler")
    with db.read() as conn:
        assert history.cancel_requested(conn) == [run]


def test_api_cancel_and_its_errors(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    [queued, ended] = queue(db, n=2, created="2024-01-02T10:00:00Z")
    finish(db, ended, Status.COMPLETE, "2024-01-02T10:00:01Z")
    assert client.post("/api/cancel", json={"id": queued}).json() == {
        "execution_id": queued,
        "task": "extract:orders",
        "cancel": "cancelled",
    }
    done = client.post("/api/cancel", json={"id": ended})
    assert done.status_code == 409 and "already ended" in done.json()["error"]
    assert client.post("/api/cancel", json={"id": 999}).status_code == 404
    assert client.post("/api/cancel", json={}).status_code == 400
    assert 'id="cancel"' not in client.get(f"/runs/{ended}", headers=HTML).text
