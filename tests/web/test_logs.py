"""/logs and /api/logs: search every execution's stored output (`tomlflow logs --search`)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from scheduler.store import history
from scheduler.store.history import LogRow
from tests.web.conftest import at
from tests.web.test_pages import HTML, db_of, queue

XSS = "<script>alert(1)</script>"


def test_search_finds_lines_holding_every_word(app: Starlette, client: TestClient) -> None:
    db = db_of(app)
    first, second = queue(db, n=2, created="2024-01-02T10:00:00Z")
    with db.write() as conn:
        history.insert_logs(
            conn,
            [
                LogRow(first, 0, at("2024-01-02T10:00:01Z"), "stderr", "connection timeout to db"),
                LogRow(first, 1, at("2024-01-02T10:00:02Z"), "stdout", "retrying"),
                LogRow(second, 0, at("2024-01-02T10:00:03Z"), "stdout", f"timeout {XSS}"),
            ],
        )
    hits = client.get("/api/logs?q=timeout").json()["hits"]
    assert {h["execution_id"] for h in hits} == {first, second}
    both = client.get("/api/logs?q=connection timeout").json()["hits"]
    assert [h["line"] for h in both] == ["connection timeout to db"]
    page = client.get("/logs?q=timeout", headers=HTML)
    assert page.status_code == 200 and "connection timeout to db" in page.text
    assert XSS not in page.text and f'href="/runs/{first}?q=timeout"' in page.text
    assert client.get("/logs", headers=HTML).status_code == 200
    assert client.get("/api/logs?q=timeout&since=soon").status_code == 400
