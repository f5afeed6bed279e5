"""The Celery executor's pure parts: its configuration, routing, ids and what goes on the wire."""

from __future__ import annotations

import json
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.config import load_config
from scheduler.errors import ConfigError
from scheduler.executors import Caps, Launch, LogLine, Outcome, Result
from scheduler.executors import backchannel as bc
from scheduler.executors.celery import queue_for


def config_of(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tomlflow.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_default_executor_is_local_and_needs_no_broker(tmp_path: Path) -> None:
    config = load_config(str(config_of(tmp_path, "")), env={})
    assert config.executor.kind == "local"


def test_executor_table_is_read(tmp_path: Path) -> None:
    path = config_of(
        tmp_path,
        '[executor]\nkind = "celery"\nbroker = "amqp://u:p@mq:5672//"\n'
        'backchannel = "redis://r:6379/2"\nheartbeat_timeout = "45s"\nnamespace = "prod"\n'
        '[workers.etl]\nqueue = "big"\n',
    )
    config = load_config(str(path), env={})
    executor = config.executor
    assert (executor.kind, executor.backchannel_url, executor.namespace) == (
        "celery", "redis://r:6379/2", "prod"
    )
    assert executor.heartbeat_timeout == timedelta(seconds=45)
    assert config.workers["etl"].queue == "big"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[executor]\nkind = "k8s"\n', 'executor.kind: must be "local" or "celery"'),
        ("[executor]\nqueue = 'x'\n", "executor.queue: unknown key"),
        ("[executor]\nbroker = 'http://x'\n", "executor.broker: must be a redis://"),
        ("[executor]\nheartbeat_timeout = '0s'\n", "executor.heartbeat_timeout: must be"),
        ("[executor]\nheartbeat_timeout = '2s'\n", "heartbeat_timeout: must be at least 3s"),
        ("[executor]\nbroker = 'amqp://u:secret@mq//'\n", "executor.broker: workers report back"),
        (
            "[executor]\nbroker = 'amqp://mq//'\nbackchannel = 'amqp://u:secret@mq//'\n",
            "executor.backchannel: workers report back",
        ),
        ("[workers.x]\nqueue = 5\n", 'workers."x".queue: must be a string'),
    ],
)
def test_bad_executor_settings_are_one_line_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(config_of(tmp_path, text)), env={})
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_a_bad_executor_setting_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_of(tmp_path, "[executor]\nbroker = 'amqp://u:secret@mq//'\n")
    assert main(["worker", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "executor.broker" in err and "Traceback" not in err and "secret" not in err


ROUTES = """
[workers.etl]
command = "etl {info}"
[workers."etl:big"]
queue = "bigmem"
[workers.report]
queue = "default"
"""


@pytest.mark.parametrize(
    ("topic", "job", "queue"),
    [
        ("etl", "", "etl"),  # a configured topic: its own queue, named after it
        ("etl", "small", "etl"),
        ("etl", "big", "bigmem"),  # the job's table names a queue
        ("report", "", "default"),  # sent to the default pool on purpose
        ("misc", "", "default"),  # no [workers] table: "the rest"
    ],
)
def test_routing(tmp_path: Path, topic: str, job: str, queue: str) -> None:
    config = load_config(str(config_of(tmp_path, ROUTES)), env={})
    assert queue_for(config, topic, job) == queue


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://user:hunter2@mq:5672//", "amqp://user:***@mq:5672//"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://user@h/0", "redis://user@h/0"),
    ],
)
def test_redact_hides_passwords(url: str, shown: str) -> None:
    assert bc.redact(url) == shown


def test_task_ids_and_namespaces_are_deterministic() -> None:
    ns = bc.namespace_for("postgresql://u:pw@db/prod")
    assert ns == bc.namespace_for("postgresql://u:other@db/prod")  # the password is no identity
    assert ns != bc.namespace_for("postgresql://u:pw@db/test")
    assert bc.task_id(ns, 12, 3) == bc.task_id(ns, 12, 3) != bc.task_id(ns, 12, 4)


def test_a_launch_survives_the_wire() -> None:
    launch = Launch(
        execution_id=5, task_id="c1", topic="etl", job="big", info="x y",
        task_time=datetime(2024, 1, 2, 3, tzinfo=UTC), attempt=2, meta={"file": "a b"},
        command=["etl", "x y"], shell=False, cwd="/srv", env={"A": "1"},
        timeout=timedelta(seconds=90),
    )
    payload = json.loads(json.dumps(bc.launch_payload(launch, "ns", "etl", Caps(5, 6, 7))))
    assert bc.launch_of(payload) == launch
    assert (payload["queue"], payload["caps"]) == ("etl", [5, 6, 7])


def test_an_outcome_and_its_lines_survive_the_wire() -> None:
    at = datetime(2024, 1, 2, 3, tzinfo=UTC)
    lines = [LogLine(5, 1, at, "stdout", "hello"), LogLine(5, 2, at, "stderr", "oops")]
    outcome = Outcome(5, Result.WARN, "half", 0, {"k": "v"}, at, at, (), None)
    ended = bc.outcome_of(bc.outcome_json(outcome, 1, "w1"))
    assert (ended.outcome, ended.batches, ended.worker) == (outcome, 1, "w1")
    assert bc.lines_of(5, [bc.lines_json(lines)]) == lines


def test_without_celery_installed_worker_and_run_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a configuration asking for Celery where Celery cannot be imported
    text = '[scheduler]\ndatabase = "sqlite:///t.db"\n[executor]\nkind = "celery"\n'
    path = config_of(tmp_path, text)
    monkeypatch.setitem(sys.modules, "celery", None)  # `import celery` now raises ImportError
    for name in ("scheduler.executors.celery", "scheduler.executors.worker"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for command in ("worker", "run"):
        # When the worker or the scheduler starts, then one line says what to install, exit 2
        assert main([command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert "pip install 'tomlflow[celery]'" in err and "Traceback" not in err


def test_an_unreachable_backchannel_stops_run_with_one_line_hiding_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a Celery configuration whose Redis does not answer (a port nobody listens on)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = (
        '[scheduler]\ndatabase = "sqlite:///t.db"\n'
        f'[executor]\nkind = "celery"\nbroker = "redis://:hunter2@127.0.0.1:{port}/0"\n'
    )
    # When the scheduler starts, then it stops with exit 2 and one line naming Redis, not the
    # password
    assert main(["run", "--once", "--config", str(config_of(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0" in err
    assert "hunter2" not in err and "Traceback" not in err
