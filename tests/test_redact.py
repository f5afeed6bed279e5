"""Credentials never reach a log line or an error: the redaction table, then the failure paths
of the commands (a database that cannot be opened or reached), with stderr and logs captured."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from scheduler.ai.tools import Toolbox
from scheduler.cli import main
from scheduler.errors import ConfigError, StoreError
from scheduler.redact import MASK, redact
from scheduler.store.db import Database
from scheduler.store.readonly import ReadOnlyDatabase
from tests.conftest import _server_database

SECRET = "hunter2-s3cret"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("database postgresql+psycopg://tom:pw@db:5432/x: refused",
         "database postgresql+psycopg://tom:***@db:5432/x: refused"),
        ("postgresql://tom:p@ss@db/x", "postgresql://tom:***@db/x"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("https://alerts:pw@hooks.example/x", "https://alerts:***@hooks.example/x"),
        ("https://ghp_token@github.example/x", "https://***@github.example/x"),
        ("https://h.example/x?token=abc&a=1&api_key=zz", "https://h.example/x?token=***&a=1&api_key=***"),
        ("https://h.example/x?X-Amz-Signature=abc", "https://h.example/x?X-Amz-Signature=***"),
        ("host=db password=pw user=tom", "host=db password=*** user=tom"),
        ("host=db password='p w' user=tom", "host=db password=*** user=tom"),
        # Nothing secret: left alone.
        ("sqlite:////var/lib/tomlflow.db", "sqlite:////var/lib/tomlflow.db"),
        ("postgresql://tom@db/x", "postgresql://tom@db/x"),
        ('password authentication failed for user "tom"',
         'password authentication failed for user "tom"'),
        ("https://hooks.example/services/x", "https://hooks.example/services/x"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_with_the_url_hides_its_secrets_quoted_out_of_context() -> None:
    url = f"http://alerts:{SECRET}@hooks.example/x?sig=abc%2Fdef"
    text = f"nonnumeric port: '{SECRET}@hooks.example' and abc/def"
    assert redact(text, url) == f"nonnumeric port: '{MASK}@hooks.example' and {MASK}"


def test_errors_built_from_a_url_never_show_its_password() -> None:
    url = f"postgresql+psycopg://tom:{SECRET}@db/x"
    assert SECRET not in str(StoreError(url, f"could not parse {url}"))
    assert SECRET not in str(ConfigError("tomlflow.toml", f"bad value {url}", "database"))


# -- the commands' failure paths ------------------------------------------------------------------

UNREACHABLE = f"postgresql+psycopg://tomlflow:{SECRET}@127.0.0.1:1/tomlflow"
UNPARSABLE = f"postgresql+psycopg://tomlflow:{SECRET}@127.0.0.1:port/tomlflow"


def site(tmp_path: Path, database: str, readonly: str = "") -> str:
    (tmp_path / "workflows").mkdir(exist_ok=True)
    config = tmp_path / "tomlflow.toml"
    extra = f'readonly_database = "{readonly}"\n' if readonly else ""
    config.write_text(f'[scheduler]\nworkflows = "workflows"\ndatabase = "{database}"\n{extra}'
                      f'[alerts]\nwebhook = "https://alerts:{SECRET}@127.0.0.1:1/x"\n')
    return str(config)


@pytest.mark.parametrize("database", [UNREACHABLE, UNPARSABLE], ids=["unreachable", "unparsable"])
@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["sql", "SELECT 1"],
        ["stats"],
        ["ask", "why?"],
        ["mcp"],
        ["refresh"],
        ["run", "--once"],
    ],
)
def test_a_database_that_cannot_be_used_is_one_line_without_its_password(
        tmp_path: Path, database: str, command: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-used")
    with caplog.at_level(logging.DEBUG):
        code = main(["-vv", *command, "--config", site(tmp_path, database)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: ") and "tomlflow:***@127.0.0.1" in captured.err
    assert SECRET not in captured.err + captured.out + caplog.text


def test_the_read_only_url_never_shows_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = site(tmp_path, f"sqlite:///{tmp_path / 't.db'}", readonly=UNPARSABLE)
    assert main(["sql", "SELECT 1", "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and SECRET not in err


@pytest.mark.parametrize("url", [UNREACHABLE, UNPARSABLE], ids=["unreachable", "unparsable"])
def test_tool_errors_never_show_the_password(url: str) -> None:
    def now() -> datetime:
        return datetime(2024, 1, 2, tzinfo=UTC)

    try:
        reader = ReadOnlyDatabase(url)
    except StoreError as exc:  # the URL itself is refused: that message is what a caller sees
        assert SECRET not in str(exc)
        return
    result = Toolbox(reader, now).call("run_sql", {"sql": "SELECT 1"})
    assert result.is_error and SECRET not in result.text
    reader.close()


def test_the_migration_log_line_shows_no_password(db: Database,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    if db.is_sqlite:
        pytest.skip("a SQLite URL has no password; the PostgreSQL run checks this")
    with _server_database() as url:
        # The test server trusts local connections, so any password logs in.
        with_password = make_url(url).set(password=SECRET).render_as_string(False)
        with caplog.at_level(logging.INFO, logger="scheduler.store.db"):
            Database(with_password).close()
    assert "migrated" in caplog.text and SECRET not in caplog.text
