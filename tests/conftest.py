"""Shared fixtures: a workflow folder builder, a database, and a clock the test controls; and
the helpers of the tests that run tomlflow as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from sqlalchemy import select

from scheduler import catalog as catalog_module
from scheduler.catalog import Catalog
from scheduler.cli import main
from scheduler.loader import read_source
from scheduler.store.db import Database
from scheduler.store.schema import executions

T = TypeVar("T")

# --- hypothesis profile ------------------------------------------------------------------------
# Every run explores the same examples (derandomize) and keeps no example database between runs,
# so a failure found once cannot make every later run fail from a stale saved example, and CI
# and a laptop see the same thing. A failure prints the blob that reproduces it. No deadline: a
# loaded machine must not turn a slow example into a failure.
settings.register_profile(
    "tomlflow", derandomize=True, database=None, print_blob=True, deadline=None
)
settings.load_profile("tomlflow")


class ManualClock:
    """A clock that moves only when the test says so (``sleep`` moves it too).

    ``advance`` is time passing (wall and monotonic readings move together); ``step`` is the
    wall clock being set (an operator, NTP), which moves the wall reading alone.
    """

    def __init__(self, start: datetime) -> None:
        self.current = start
        self.mono = 0.0

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=seconds))

    def advance(self, delta: timedelta) -> None:
        self.current += delta
        self.mono += delta.total_seconds()

    def step(self, delta: timedelta) -> None:
        self.current += delta


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2024, 1, 2, 12, 0, tzinfo=UTC))


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    return folder


WriteWorkflow = Callable[[str, str], Path]

SITE_DATABASE = "tomlflow.db"


def make_site(
    root: Path,
    workflows: Mapping[str, str],
    settings: str = "",
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> Path:
    """A project folder as a user has one: ``workflows/<name>`` for each of ``workflows`` and a
    ``tomlflow.toml`` whose [scheduler] names that folder, the SQLite file SITE_DATABASE and
    the ``settings`` lines. With ``monkeypatch``, the tests work in it, with no TOMLFLOW_CONFIG."""
    (root / "workflows").mkdir(parents=True, exist_ok=True)
    for name, text in workflows.items():
        (root / "workflows" / name).write_text(text, encoding="utf-8")
    config = f'[scheduler]\nworkflows = "workflows"\ndatabase = "sqlite:///{SITE_DATABASE}"\n'
    (root / "tomlflow.toml").write_text(config + textwrap.dedent(settings), encoding="utf-8")
    if monkeypatch is not None:
        monkeypatch.chdir(root)
        monkeypatch.delenv("TOMLFLOW_CONFIG", raising=False)
    return root


@pytest.fixture
def write_workflow(workflow_dir: Path) -> WriteWorkflow:
    """Write ``text`` (dedented) to ``workflow_dir/name``, creating sub-folders."""

    def write(name: str, text: str) -> Path:
        path = workflow_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


# Set to a PostgreSQL server URL (postgresql+psycopg://user@host:port/postgres) to run every test
# that uses the `db` fixture against a fresh PostgreSQL database instead of a SQLite file.
SERVER_URL = os.environ.get("TEST_SERVER_DATABASE_URL", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With a server URL, run only the tests that use the `db` fixture: the rest would repeat
    what the SQLite run already checked."""
    if not SERVER_URL:
        return
    uses_db = [item for item in items if "db" in getattr(item, "fixturenames", ())]
    kept = set(uses_db)
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = uses_db


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    if not SERVER_URL:
        database = Database(f"sqlite:///{tmp_path / 'tomlflow.db'}")
        yield database
        database.close()
        return
    with _server_database() as url:
        database = Database(url)
        yield database
        database.close()


@contextmanager
def _server_database() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tomlflow_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        yield make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture
def catalog(db: Database, workflow_dir: Path, clock: ManualClock) -> Catalog:
    return Catalog(db, workflow_dir, clock)


def wait_for(check: Callable[[], T], timeout: float = 15.0, poll: float = 0.05) -> T:
    """Call ``check`` every ``poll`` seconds until it returns something true, and return that;
    fail after ``timeout`` seconds (the tests that start real processes wait with this)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {check.__doc__ or check}")


def site_cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``tomlflow ARGS`` in a child process, with the site's config, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args, "--config", str(site / "tomlflow.toml")],
        cwd=site, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def site_rows(site: Path) -> list[Any]:
    """Every ``executions`` row of the site's SQLite database, oldest first."""
    db = Database(f"sqlite:///{site / 'tomlflow.db'}")
    try:
        with db.read() as conn:
            return list(conn.execute(select(executions).order_by(executions.c.id)).all())
    finally:
        db.close()


@pytest.fixture
def site_db(site: Path) -> Iterator[Database]:
    """The database of the requesting module's ``site`` fixture (a folder ``make_site`` built)."""
    database = Database(f"sqlite:///{site / 'tomlflow.db'}")
    yield database
    database.close()


def run_main(*args: str) -> int:
    """``tomlflow ARGS`` in this process, with the config of the site in the working folder."""
    return main([*args, "--config", "tomlflow.toml"])


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The workflow files refresh reads, by name, in order (a seam around the catalog's reader)."""
    seen: list[str] = []

    def counting(path: str) -> tuple[bytes, object]:
        seen.append(os.path.basename(path))
        return read_source(path)

    monkeypatch.setattr(catalog_module, "read_source", counting)
    return seen
