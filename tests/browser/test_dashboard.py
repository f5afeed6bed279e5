"""The issue's scenario in a real browser: open the overview, follow a phase, trigger it, watch
the run appear and its log follow live, retry it, preview a backfill, edit a phase and see the
change on disk with its comments intact."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.clock import SystemClock
from scheduler.config import load_config
from scheduler.engine import Engine
from scheduler.executors import LocalExecutor
from scheduler.store.db import Database
from scheduler.web.app import create_app
from tests.browser.conftest import WAIT_S, serve, shutdown
from tests.conftest import make_site

# Four lines a quarter second apart, so the run is seen running before it completes.
HELLO = """\
# said from the browser test
[[phase]]
task = "hello:world"
rule = "cron=0 0 1 1 *"   # once a year: the test triggers it
template = '''python3 -c "import time; [print('line', i, flush=True) or time.sleep(0.25) \
for i in range(4)]"'''
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    return make_site(tmp_path / "site", {"hello.toml": HELLO})


@pytest.fixture
def dashboard(site: Path) -> Iterator[str]:
    """The web app and a scheduler (the engine, in a thread) on the same database."""
    config = load_config(str(site / "tomlflow.toml"))
    app = create_app(config)
    served = serve(app)
    clock = SystemClock()
    db = Database(config.database)
    engine = Engine(config, db, LocalExecutor(2, clock.now), clock)
    stop = threading.Event()
    daemon = threading.Thread(target=engine.run_forever, args=(stop,), daemon=True)
    daemon.start()
    try:
        yield served.url
    finally:
        stop.set()
        daemon.join(WAIT_S)
        shutdown(served)
        db.close()
        app.state.ctx.close()


def wait_for(browser: Any, css: str, text: str = "") -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    if text:
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_the_issue_scenario(browser: Any, dashboard: str, site: Path) -> None:
    from selenium.webdriver.common.by import By

    # open the overview: the scheduler is running
    browser.get(dashboard + "/")
    wait_for(browser, "#scheduler", "running")
    # follow the phase: Workflows -> the file -> the phase
    browser.find_element(By.LINK_TEXT, "Workflows").click()
    browser.find_element(By.LINK_TEXT, "hello.toml").click()
    browser.find_element(By.LINK_TEXT, "hello:world").click()
    wait_for(browser, "h1", "hello:world")
    # trigger it with meta
    browser.find_element(By.NAME, "meta").send_keys("who=browser")
    browser.find_element(By.ID, "trigger-button").click()
    wait_for(browser, "h1", "Run #")
    run_url = browser.current_url
    # the log follows live: new lines and the final status arrive without a reload
    browser.execute_script("window.sameDocument = true")
    wait_for(browser, "#log-lines", "line 3")
    wait_for(browser, "#run-status", "complete")
    assert browser.execute_script("return window.sameDocument") is True
    assert "who" in browser.find_element(By.TAG_NAME, "pre").text
    # retry it: a second attempt runs to the end
    browser.find_element(By.XPATH, "//button[text()='Retry']").click()
    wait_for(browser, "dl.facts", "attempt")
    assert browser.current_url != run_url
    wait_for(browser, "#run-status", "complete")
    attempt = browser.find_element(By.XPATH, "//dt[text()='attempt']/following-sibling::dd")
    assert attempt.text == "2"
    # a backfill dry run previews without queueing
    browser.get(dashboard + "/backfill")
    browser.find_element(By.NAME, "task").send_keys("hello:world")
    browser.find_element(By.NAME, "from").send_keys("2024-01-01")
    browser.find_element(By.NAME, "to").send_keys("2024-01-07")
    browser.find_element(By.ID, "preview").click()
    wait_for(browser, "#backfill-count", "7")
    # edit the phase through the form: the file changes on disk, its comments stay
    browser.get(dashboard + "/edit/phase?file=hello.toml&task=hello:world")
    rule = browser.find_element(By.ID, "rule")
    rule.clear()
    rule.send_keys("cron=0 0 1 1 *&timeout=1m")
    browser.find_element(By.ID, "save").click()
    wait_for(browser, ".flash", "saved hello:world")
    text = (site / "workflows" / "hello.toml").read_text()
    assert 'rule = "cron=0 0 1 1 *&timeout=1m"   # once a year: the test triggers it' in text
    assert text.startswith("# said from the browser test\n")


def test_a_refused_edit_shows_why_and_changes_nothing(
    browser: Any, dashboard: str, site: Path
) -> None:
    from selenium.webdriver.common.by import By

    before = (site / "workflows" / "hello.toml").read_bytes()
    browser.get(dashboard + "/edit/phase?file=hello.toml&task=hello:world")
    field = browser.find_element(By.NAME, "depends_on")
    field.send_keys("missing")
    browser.find_element(By.ID, "save").click()
    wait_for(browser, "#edit-problem", "parent task not found: missing")
    assert (site / "workflows" / "hello.toml").read_bytes() == before


def test_usable_on_a_phone(browser: Any, dashboard: str) -> None:
    browser.set_window_size(390, 844)
    browser.get(dashboard + "/runs")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400  # nothing forces the page wider than the screen
