"""Configuration: discovery, defaults, relative paths, and one clear error per bad value."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.config import (
    AIConfig,
    AlertsConfig,
    Config,
    WorkerConfig,
    find_config_file,
    load_config,
)
from scheduler.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given no --config, no TOMLFLOW_CONFIG and no ./tomlflow.toml
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    # then every setting has its documented default, paths resolved against the working dir
    assert config.source is None
    assert config.workflows == tmp_path / "workflows"
    assert config.database == f"sqlite:///{tmp_path / 'tomlflow.db'}"
    assert config.timezone == "UTC"
    assert config.refresh == timedelta(minutes=1)
    assert config.max_workers == (os.cpu_count() or 2)
    assert config.shutdown_grace == timedelta(seconds=30)
    assert config.workers == {}
    assert config.alerts == AlertsConfig()
    assert config.retention is None
    assert config.ai == AIConfig()


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = write(tmp_path / "tomlflow.toml", "")
    from_env = write(tmp_path / "env.toml", "")
    explicit = write(tmp_path / "explicit.toml", "")
    # --config wins over the environment, which wins over ./tomlflow.toml
    env = {"TOMLFLOW_CONFIG": str(from_env)}
    assert find_config_file(str(explicit), env) == explicit
    assert find_config_file(None, env) == from_env
    assert find_config_file(None, {}) == Path("tomlflow.toml")
    assert find_config_file(None, {"TOMLFLOW_CONFIG": ""}) == Path("tomlflow.toml")
    local.unlink()
    assert find_config_file(None, {}) is None


@pytest.mark.parametrize("how", ["explicit", "env", "cwd"])
def test_each_way_of_finding_the_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.chdir(tmp_path)
    name = "tomlflow.toml" if how == "cwd" else "conf/my.toml"
    path = write(tmp_path / name, '[scheduler]\ntimezone = "Europe/Berlin"\n')
    explicit = str(path) if how == "explicit" else None
    env = {"TOMLFLOW_CONFIG": str(path)} if how == "env" else {}
    config = load_config(explicit, env=env)
    assert config.timezone == "Europe/Berlin"
    assert config.source is not None and config.source.resolve() == path.resolve()


def test_env_var_from_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.toml", '[scheduler]\nrefresh = "5m"\n')
    monkeypatch.setenv("TOMLFLOW_CONFIG", str(path))
    assert load_config().refresh == timedelta(minutes=5)


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a config in conf/ and the working directory elsewhere
    path = write(
        tmp_path / "conf" / "tomlflow.toml",
        """
        [scheduler]
        workflows = "../flows"
        database = "sqlite:///state/t.db"

        [workers."extract"]
        command = "python3 x.py {info}"
        cwd = "bin"
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(str(path), env={})
    assert config.workflows.resolve() == (tmp_path / "flows").resolve()
    assert config.database == f"sqlite:///{(tmp_path / 'conf' / 'state' / 't.db').absolute()}"
    cwd = config.workers["extract"].cwd
    assert cwd is not None and cwd.resolve() == (tmp_path / "conf" / "bin").resolve()


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("sqlite:////abs/t.db", True),
        ("sqlite://", True),
        ("sqlite:///:memory:", True),
        ("postgresql+psycopg://u:p@host/db", True),
        ("sqlite:///rel.db", False),
    ],
)
def test_only_relative_sqlite_files_are_rewritten(tmp_path: Path, url: str, same: bool) -> None:
    path = write(tmp_path / "c.toml", f'[scheduler]\ndatabase = "{url}"\n')
    assert (load_config(str(path), env={}).database == url) is same


def test_every_setting_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        """
        [scheduler]
        timezone = "America/New_York"
        refresh = "30s"
        max_workers = 3
        shutdown_grace = "1m"

        [workers."extract"]
        command = "python3 x.py {info}"
        shell = true
        timeout = "1h"
        env = { WAREHOUSE = "dev" }

        [workers."extract:orders"]
        command = "other {info}"

        [alerts]
        webhook = "https://hooks.example/x"
        min_frequency = "10m"
        max_frequency = "2h"

        [retention]
        executions = "90d"

        [ai]
        model = "m"
        max_turns = 3
        """,
    )
    config = load_config(str(path), env={})
    assert (config.timezone, config.refresh, config.max_workers, config.shutdown_grace) == (
        "America/New_York",
        timedelta(seconds=30),
        3,
        timedelta(minutes=1),
    )
    assert config.workers["extract"] == WorkerConfig(
        command="python3 x.py {info}", shell=True, timeout=timedelta(hours=1),
        env={"WAREHOUSE": "dev"},
    )
    assert config.alerts == AlertsConfig(
        "https://hooks.example/x", timedelta(minutes=10), timedelta(hours=2)
    )
    assert config.retention == timedelta(days=90)
    assert config.ai == AIConfig("m", 3)


@pytest.mark.parametrize(
    ("topic", "job", "command"),
    [
        ("extract", "orders", "other {info}"),  # topic:job wins
        ("extract", "users", "python3 x.py {info}"),
        ("extract", "", "python3 x.py {info}"),
        ("load", "", None),
    ],
)
def test_worker_for(topic: str, job: str, command: str | None) -> None:
    config = Config(workers={
        "extract": WorkerConfig(command="python3 x.py {info}"),
        "extract:orders": WorkerConfig(command="other {info}"),
    })
    worker = config.worker_for(topic, job)
    assert (worker.command if worker else None) == command


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[schedular]\n", "schedular: unknown key"),
        ("[scheduler]\nworkflow = 'x'\n", "scheduler.workflow: unknown key"),
        ("[alerts]\nhook = 'x'\n", "alerts.hook: unknown key"),
        ("[retention]\nlogs = '1d'\n", "retention.logs: unknown key"),
        ("[ai]\ntemperature = 1\n", "ai.temperature: unknown key"),
        ("[workers.x]\ncmd = 'a'\n", 'workers."x".cmd: unknown key'),
        ("top = 1\n", "top: unknown key"),
        ("[scheduler]\nrefresh = 'soon'\n", "scheduler.refresh: invalid duration 'soon'"),
        ("[scheduler]\nrefresh = '0s'\n", "scheduler.refresh: must be a positive duration"),
        ("[scheduler]\nrefresh = 60\n", "scheduler.refresh: must be a string"),
        ("[alerts]\nmin_frequency = '5 min'\n", "alerts.min_frequency: invalid duration"),
        ("[retention]\nexecutions = 'forever'\n", "retention.executions: invalid duration"),
        ("[workers.x]\ntimeout = 'x'\n", 'workers."x".timeout: invalid duration'),
        ("[scheduler]\ntimezone = 'Mars/Base'\n", "scheduler.timezone: unknown time zone"),
        ("[scheduler]\ntimezone = 'America'\n", "scheduler.timezone: unknown time zone"),
        ("[scheduler]\nmax_workers = 0\n", "scheduler.max_workers: must be a whole number"),
        ("[scheduler]\nmax_workers = true\n", "scheduler.max_workers: must be a whole number"),
        ("[scheduler]\nworkflows = 5\n", "scheduler.workflows: must be a string"),
        ("scheduler = 5\n", "scheduler: must be a table"),
        ("[workers]\nx = 'cmd'\n", 'workers."x": must be a table'),
        ("[workers.x]\nshell = 'yes'\n", 'workers."x".shell: must be true or false'),
        ("[workers.x]\nenv = { A = 1 }\n", 'workers."x".env: must be a table of strings'),
        ("[ai]\nmax_turns = -1\n", "ai.max_turns: must be a whole number"),
        ("[scheduler\n", "invalid TOML"),
    ],
)
def test_bad_config_is_one_error_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={})
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value).rstrip()


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "nope.toml"), env={})


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(None, env={"TOMLFLOW_CONFIG": str(tmp_path / "nope.toml")})


def test_config_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"[scheduler]\ntimezone = '\xff'\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(path), env={})


def test_example_config_parses_and_states_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the repository's config.example.toml, read from the repository's root
    monkeypatch.chdir(REPO)
    example = load_config(str(REPO / "config.example.toml"), env={})
    defaults = Config()
    # then each value it states equals the default (max_workers and retention are commented out)
    for name in ("workflows", "database", "timezone", "refresh", "max_workers",
                 "shutdown_grace", "workers", "alerts", "retention", "ai"):
        assert getattr(example, name) == getattr(defaults, name), name
