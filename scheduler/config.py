"""Configuration: one TOML file, found via ``--config``, ``TOMLFLOW_CONFIG`` or ``./tomlflow.toml``.

Every setting has a default, so no file is needed. Relative paths in a file are relative to that
file. Unknown tables or keys are an error naming them: a typo must never be silently ignored.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.durations import parse_duration
from scheduler.errors import ConfigError, DurationError

ENV_VAR = "TOMLFLOW_CONFIG"
DEFAULT_FILE = "tomlflow.toml"
DEFAULT_DATABASE = "sqlite:///tomlflow.db"


@dataclass(frozen=True)
class WorkerConfig:
    """How to run one topic (or topic:job): ``{info}`` in command is the rendered template."""

    command: str = ""
    python: str = ""  # "package.module:function", called in-process instead of a command
    shell: bool = False
    timeout: timedelta | None = None
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    queue: str = ""  # the Celery queue of this topic's phases (executor kind "celery")


@dataclass(frozen=True)
class ExecutorConfig:
    """``[executor]``: where phases run. ``local`` needs nothing; ``celery`` needs a broker.

    ``backchannel`` is the Redis that carries claims, heartbeats, live output and outcomes
    between workers and the scheduler; empty means the broker itself (which must then be Redis).
    ``namespace`` keeps two databases' executions apart on one Redis; empty means derived
    from the database URL.
    """

    kind: str = "local"
    broker: str = "redis://127.0.0.1:6379/0"
    backchannel: str = ""
    heartbeat_timeout: timedelta = timedelta(seconds=30)
    namespace: str = ""

    @property
    def backchannel_url(self) -> str:
        return self.backchannel or self.broker


@dataclass(frozen=True)
class AlertsConfig:
    webhook: str = ""
    min_frequency: timedelta = timedelta(minutes=5)
    max_frequency: timedelta = timedelta(minutes=80)


@dataclass(frozen=True)
class AIConfig:
    model: str = "claude-sonnet-4-5"
    max_turns: int = 12


@dataclass(frozen=True)
class WebConfig:
    """``tomlflow web``: where it listens; ``token`` is required to bind a non-loopback host."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""


@dataclass(frozen=True)
class Config:
    """Everything configurable, resolved: paths absolute, durations parsed."""

    source: Path | None = None
    workflows: Path = field(default_factory=lambda: Path("workflows").absolute())
    database: str = field(default_factory=lambda: _sqlite_url(DEFAULT_DATABASE, Path.cwd()))
    readonly_database: str = ""  # a read-only role's URL for sql, ask, mcp (docs/SECURITY.md)
    timezone: str = "UTC"
    refresh: timedelta = timedelta(minutes=1)
    max_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    shutdown_grace: timedelta = timedelta(seconds=30)
    watch: Path | None = None  # a folder whose new files are reported to file triggers
    backup: Path | None = None  # where the daemon keeps a copy of its SQLite database
    backup_every: timedelta = timedelta(hours=24)
    workers: Mapping[str, WorkerConfig] = field(default_factory=dict)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    retention: timedelta | None = None
    ai: AIConfig = field(default_factory=AIConfig)
    web: WebConfig = field(default_factory=WebConfig)
    spool: Path | None = None  # execution receipts; None: the default beside the database
    output_max_lines: int = 10_000  # stored output per execution: first half and last half
    output_max_bytes: int = 10 * 1024 * 1024
    output_max_line: int = 64 * 1024  # a longer line is cut with a marker
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    @property
    def query_database(self) -> str:
        """The URL someone's SQL runs on: ``readonly_database`` when set, else ``database``."""
        return self.readonly_database or self.database

    @property
    def workflow_root(self) -> Path:
        """The folder workflow files live in (a meta-file path is relative to its file's)."""
        return self.workflows if self.workflows.is_dir() else self.workflows.parent

    @property
    def spool_dir(self) -> Path:
        """Where execution receipts live: ``[scheduler] spool``, else ``<db file>.spool`` beside
        a SQLite file database, else ``.tomlflow-spool`` in the config's folder (or here)."""
        if self.spool is not None:
            return self.spool
        prefix = "sqlite:///"
        rest = self.database[len(prefix) :] if self.database.startswith(prefix) else ""
        if rest and not rest.startswith((":memory:", "file:")):
            return Path(rest.split("?", 1)[0] + ".spool")
        base = self.source.absolute().parent if self.source else Path.cwd()
        return base / ".tomlflow-spool"

    def worker_for(self, topic: str, job: str) -> WorkerConfig | None:
        """The ``[workers."topic:job"]`` table if any, else ``[workers."topic"]``, else None."""
        if job and f"{topic}:{job}" in self.workers:
            return self.workers[f"{topic}:{job}"]
        return self.workers.get(topic)


def find_config_file(explicit: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """``--config``, else ``$TOMLFLOW_CONFIG``, else ``./tomlflow.toml`` if present, else None."""
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load_config(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Find and read the configuration; raises ConfigError with the file and key at fault."""
    path = find_config_file(explicit, env)
    if path is None:
        return Config()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"invalid TOML: {exc}") from None
    return parse_config(document, path)


def parse_config(document: Mapping[str, Any], path: Path) -> Config:
    """Build a Config from a parsed document read from ``path``."""
    reader = _Reader(str(path), path.absolute().parent)
    tables = {"scheduler", "workers", "alerts", "retention", "ai", "web", "executor"}
    reader.only(document, tables, "")
    sched = reader.table(document, "scheduler")
    reader.only(sched, set(_SCHEDULER), "scheduler")
    values: dict[str, Any] = {"source": path}
    for key, convert in _SCHEDULER.items():
        if key in sched:
            values[key] = convert(reader, f"scheduler.{key}", sched[key])
    values["workers"] = _workers(reader, reader.table(document, "workers"))
    values["alerts"] = _alerts(reader, reader.table(document, "alerts"))
    retention = reader.table(document, "retention")
    reader.only(retention, {"executions"}, "retention")
    if "executions" in retention:
        values["retention"] = reader.duration("retention.executions", retention["executions"])
    values["ai"] = _ai(reader, reader.table(document, "ai"))
    values["web"] = _web(reader, reader.table(document, "web"))
    values["executor"] = _executor(reader, reader.table(document, "executor"))
    return Config(**values)


@dataclass(frozen=True)
class _Reader:
    """Typed reads that name the file and key in every error."""

    file: str
    base: Path

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, reason, key)

    def table(self, doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return value

    def only(self, doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
        for key in doc:
            if key not in allowed:
                name = f"{where}.{key}" if where else key
                raise self.fail(name, f"unknown key (expected one of {', '.join(sorted(allowed))})")

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(key, "must be a string")
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def positive_int(self, key: str, value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(key, "must be a whole number of at least 1")
        return value

    def command(self, key: str, value: Any) -> str:
        text = self.string(key, value)
        try:
            shlex.split(text)
        except ValueError as exc:
            raise self.fail(key, f"cannot split command: {exc}") from None
        return text

    def python_target(self, key: str, value: Any) -> str:
        text = self.string(key, value)
        if text and not re.fullmatch(r"[\w.]+:[\w.]+", text):
            raise self.fail(key, "must be 'package.module:function'")
        return text

    def duration(self, key: str, value: Any) -> timedelta:
        try:
            delta = parse_duration(self.string(key, value))
        except DurationError:
            raise self.fail(key, f"invalid duration {value!r}") from None
        if delta <= timedelta(0):
            raise self.fail(key, "must be a positive duration")
        return delta

    def path(self, key: str, value: Any) -> Path:
        return (self.base / Path(self.string(key, value)).expanduser()).absolute()

    def timezone(self, key: str, value: Any) -> str:
        name = self.string(key, value)
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder, a long name
            raise self.fail(key, f"unknown time zone {name!r}") from None
        return name

    def database(self, key: str, value: Any) -> str:
        return _sqlite_url(self.string(key, value), self.base)


_SCHEDULER: dict[str, Callable[[_Reader, str, Any], Any]] = {
    "workflows": _Reader.path,
    "database": _Reader.database,
    "readonly_database": _Reader.database,
    "timezone": _Reader.timezone,
    "refresh": _Reader.duration,
    "max_workers": _Reader.positive_int,
    "shutdown_grace": _Reader.duration,
    "watch": _Reader.path,
    "backup": _Reader.path,
    "backup_every": _Reader.duration,
    "spool": _Reader.path,
    "output_max_lines": _Reader.positive_int,
    "output_max_bytes": _Reader.positive_int,
    "output_max_line": _Reader.positive_int,
}


def _workers(reader: _Reader, table: Mapping[str, Any]) -> dict[str, WorkerConfig]:
    workers = {}
    for name, raw in table.items():
        where = f'workers."{name}"'
        if not isinstance(raw, dict):
            raise reader.fail(where, "must be a table")
        keys = {"command", "python", "shell", "timeout", "cwd", "env", "queue"}
        reader.only(raw, keys, where)
        env = raw.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise reader.fail(f"{where}.env", "must be a table of strings")
        workers[name] = WorkerConfig(
            command=reader.command(f"{where}.command", raw.get("command", "")),
            python=reader.python_target(f"{where}.python", raw.get("python", "")),
            shell=reader.boolean(f"{where}.shell", raw.get("shell", False)),
            timeout=(
                reader.duration(f"{where}.timeout", raw["timeout"]) if "timeout" in raw else None
            ),
            cwd=reader.path(f"{where}.cwd", raw["cwd"]) if "cwd" in raw else None,
            env=dict(env),
            queue=reader.string(f"{where}.queue", raw.get("queue", "")),
        )
    return workers


def _alerts(reader: _Reader, table: Mapping[str, Any]) -> AlertsConfig:
    reader.only(table, {"webhook", "min_frequency", "max_frequency"}, "alerts")
    values: dict[str, Any] = {}
    if "webhook" in table:
        values["webhook"] = reader.string("alerts.webhook", table["webhook"])
    for key in ("min_frequency", "max_frequency"):
        if key in table:
            values[key] = reader.duration(f"alerts.{key}", table[key])
    return AlertsConfig(**values)


MIN_HEARTBEAT_TIMEOUT = timedelta(seconds=3)
_BROKER_SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")
_REDIS_SCHEMES = ("redis://", "rediss://")


def _executor(reader: _Reader, table: Mapping[str, Any]) -> ExecutorConfig:
    keys = {"kind", "broker", "backchannel", "heartbeat_timeout", "namespace"}
    reader.only(table, keys, "executor")
    values: dict[str, Any] = {}
    for key in ("kind", "broker", "backchannel", "namespace"):
        if key in table:
            values[key] = reader.string(f"executor.{key}", table[key])
    if values.get("kind", "local") not in ("local", "celery"):
        raise reader.fail("executor.kind", 'must be "local" or "celery"')
    if "heartbeat_timeout" in table:
        timeout = reader.duration("executor.heartbeat_timeout", table["heartbeat_timeout"])
        if timeout < MIN_HEARTBEAT_TIMEOUT:  # workers beat every second: allow a few misses
            raise reader.fail("executor.heartbeat_timeout", "must be at least 3s")
        values["heartbeat_timeout"] = timeout
    config = ExecutorConfig(**values)
    # Only the scheme is named in errors: a URL may carry a password.
    if not config.broker.startswith(_BROKER_SCHEMES):
        raise reader.fail("executor.broker", "must be a redis://, rediss:// or amqp:// URL")
    if not config.backchannel_url.startswith(_REDIS_SCHEMES):
        key = "executor.backchannel" if config.backchannel else "executor.broker"
        reason = "workers report back through Redis: set executor.backchannel to a redis:// URL"
        raise reader.fail(key, reason)
    return config


def _ai(reader: _Reader, table: Mapping[str, Any]) -> AIConfig:
    reader.only(table, {"model", "max_turns"}, "ai")
    values: dict[str, Any] = {}
    if "model" in table:
        values["model"] = reader.string("ai.model", table["model"])
    if "max_turns" in table:
        values["max_turns"] = reader.positive_int("ai.max_turns", table["max_turns"])
    return AIConfig(**values)


def _web(reader: _Reader, table: Mapping[str, Any]) -> WebConfig:
    reader.only(table, {"host", "port", "token"}, "web")
    values: dict[str, Any] = {}
    if "host" in table:
        values["host"] = reader.string("web.host", table["host"])
    if "port" in table:
        port = reader.positive_int("web.port", table["port"])
        if port > 65535:
            raise reader.fail("web.port", "must be a port number (1-65535)")
        values["port"] = port
    if "token" in table:
        values["token"] = reader.string("web.token", table["token"])
    return WebConfig(**values)


def _sqlite_url(url: str, base: Path) -> str:
    """Make a relative SQLite file path absolute against ``base``; other URLs pass through."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix or url.startswith(prefix + "/"):
        return url
    rest = url[len(prefix) :]
    if rest.startswith(":memory:") or rest.startswith("file:"):
        return url
    return prefix + str((base / rest).absolute())
