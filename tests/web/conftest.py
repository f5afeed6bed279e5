"""Fixtures for the dashboard: a project folder, the app on it, and a test client that
behaves as a browser does (keeps cookies, sends the CSRF token it was given)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from scheduler.config import Config, load_config
from scheduler.store import history
from scheduler.store.db import Database
from scheduler.store.history import Finish, Status
from scheduler.tasktime import from_iso
from scheduler.web.app import create_app
from tests.conftest import make_site

ETL = """\
# the orders pipeline
[[phase]]
task = "extract:orders"
rule = "cron=0 5 * * *&offset=-24h"   # daily at five
template = "echo extract {yyyy}-{mm}-{dd}"

[[phase]]
task = "load"
depends_on = "extract"
retry = 1
template = "echo load {yyyy}-{mm}-{dd}"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(tmp_path / "site", {"etl.toml": ETL})


@pytest.fixture
def config(site: Path, db: Database) -> Config:
    """The site's configuration on the ``db`` fixture's database, so that with
    TEST_SERVER_DATABASE_URL every page and action runs on PostgreSQL too."""
    return replace(load_config(str(site / "tomlflow.toml")), database=db.url)


@pytest.fixture
def app(config: Config) -> Iterator[Starlette]:
    application = create_app(config)
    yield application
    application.state.ctx.close()


@pytest.fixture
def client(app: Starlette) -> TestClient:
    return TestClient(app, base_url="http://testserver")


def csrf_of(client: TestClient, url: str = "/") -> str:
    """The CSRF token a page hands its forms (and sets as this client's cookie)."""
    html = client.get(url).text
    match = re.search(r'name="csrf" value="([^"]+)"', html) or re.search(
        r'"X-CSRF-Token": "([^"]+)"', html
    )
    assert match, "no CSRF token on the page"
    return match.group(1)


def finish(db: Database, execution_id: int, status: Status, when: str, msg: str = "") -> None:
    """Record an end for a queued execution, as the engine would."""
    start = from_iso(when)
    with db.write() as conn:
        history.mark_running(conn, [execution_id], start)
        history.record_finishes(
            conn,
            [
                Finish(
                    execution_id, status, msg, 0 if status is Status.COMPLETE else 1, start, start
                )
            ],
        )


def at(text: str) -> datetime:
    return from_iso(text)
