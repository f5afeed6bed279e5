"""``tomlflow doctor``: one screen of health, each finding one line with what to do about it.

``examine`` gathers facts (store/health.py, the file system) and judges them into findings:
``ok``, ``warn`` (worth acting on soon) or ``fail`` (act now). Anything but ``ok`` carries an
action, and the command exits 1 when there is one. It never creates or changes a database.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from scheduler.config import Config
from scheduler.errors import StoreError
from scheduler.store import health
from scheduler.store.db import MIGRATIONS, Database
from scheduler.store.health import TableSize
from scheduler.store.lease import Holder
from scheduler.tasktime import iso

WAL_WARN = 256 * 1024 * 1024  # bytes: a WAL this big is not being checkpointed
DISK_FAIL = 512 * 1024 * 1024  # free bytes below which writes may soon fail
DISK_WARN_RATIO = 0.05
QUEUE_WAIT = timedelta(minutes=5)  # a ready row waiting longer means nothing is starting it


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    detail: str
    action: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "level": self.level.value,
            "detail": self.detail,
            "action": self.action,
        }


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    tables: list[TableSize] = field(default_factory=list)

    @property
    def needs_action(self) -> bool:
        return any(f.level is not Level.OK for f in self.findings)

    def add(self, check: str, level: Level, detail: str, action: str = "") -> None:
        self.findings.append(Finding(check, level, detail, action))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.needs_action,
            "findings": [f.as_dict() for f in self.findings],
            "tables": [{"name": t.name, "rows": t.rows, "bytes": t.bytes} for t in self.tables],
        }


def examine(config: Config, now: datetime) -> Report:
    """Every check, in the order a person reads them; never raises for what it finds."""
    report = Report()
    _check_workflows(report, config)
    db_file = _sqlite_file(config.database)
    if db_file is not None and not db_file.is_file():
        report.add(
            "database",
            Level.FAIL,
            f"no database at {db_file}",
            "run `tomlflow run` (or `tomlflow refresh`) to create it",
        )
        _check_disk(report, db_file.parent)
        return report
    db = Database(config.database, migrate=False)
    try:
        _check_database(report, db, db_file, now)
    except StoreError as exc:
        report.add(
            "database",
            Level.FAIL,
            f"{health.safe_url(config.database)}: {exc.reason}",
            "check that the database server is up and the URL in the config is right",
        )
    finally:
        db.close()
    if db_file is not None:
        _check_disk(report, db_file.parent)
    _check_backup(report, config, now)
    return report


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or ":memory:" in url or url[len(prefix) :].startswith("file:"):
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])


def _check_workflows(report: Report, config: Config) -> None:
    if not config.workflows.exists():
        report.add(
            "workflows",
            Level.FAIL,
            f"{config.workflows} does not exist",
            "create it or set [scheduler] workflows in the config",
        )


def _check_database(report: Report, db: Database, db_file: Path | None, now: datetime) -> None:
    with db.read() as conn:
        health.ping(conn)
        report.add("database", Level.OK, f"{health.safe_url(db.url)} reachable")
        version = db.version()
        _judge_version(report, version)
        if version < len(MIGRATIONS):
            return  # the rest reads tables an older schema may not have
        _judge_integrity(report, health.quick_check(conn), health.search_index_ok(conn))
        if not health.search_indexed(conn):
            report.add(
                "search index",
                Level.WARN,
                "none: this SQLite lacks FTS5, so `logs --search` reads every line",
                "run tomlflow on a Python whose SQLite has FTS5 (python.org and distro builds do)",
            )
        report.tables = health.table_sizes(conn)
        _judge_lease(report, health.holder(conn), now)
        _judge_files(report, health.file_errors(conn), health.phase_errors(conn))
        _judge_queue(report, health.queued_ready(conn, iso(now)), now)
    if db_file is not None:
        _judge_wal(report, health.wal_bytes(db_file))


def _judge_version(report: Report, version: int) -> None:
    newest = len(MIGRATIONS)
    if version == newest:
        report.add("schema", Level.OK, f"version {version}")
    elif version < newest:
        report.add(
            "schema",
            Level.WARN,
            f"version {version}, this tomlflow uses {newest}",
            "run `tomlflow refresh` once to migrate it",
        )
    else:
        report.add(
            "schema",
            Level.FAIL,
            f"version {version} is newer than this tomlflow ({newest})",
            "upgrade tomlflow to the version that wrote it",
        )


def _judge_integrity(report: Report, check: list[str], index_ok: bool) -> None:
    if check and check != ["ok"]:
        report.add(
            "quick_check",
            Level.FAIL,
            "; ".join(check[:3]),
            "stop the scheduler and restore the last `tomlflow backup`",
        )
    elif check:
        report.add("quick_check", Level.OK, "ok")
    if not index_ok:
        report.add(
            "search index",
            Level.WARN,
            "the log search index does not match the lines",
            "rebuild it: INSERT INTO execution_logs_fts(execution_logs_fts) "
            "VALUES ('rebuild') (e.g. with sqlite3)",
        )


def _judge_wal(report: Report, size: int) -> None:
    if size > WAL_WARN:
        report.add(
            "wal",
            Level.WARN,
            f"{human(size)} write-ahead log",
            "a long-open reader blocks checkpoints: close it, or restart the scheduler",
        )
    else:
        report.add("wal", Level.OK, f"{human(size)} write-ahead log")


def _judge_lease(report: Report, holder: Holder | None, now: datetime) -> None:
    if holder is None:
        report.add(
            "scheduler",
            Level.WARN,
            "no scheduler is running on this database",
            "start one: `tomlflow run`",
        )
        return
    age = (now - holder.heartbeat).total_seconds()
    who = f"pid {holder.pid} on {holder.host}, heartbeat {age:.0f} s ago"
    if holder.is_gone(now):
        report.add(
            "scheduler",
            Level.FAIL,
            f"{who}: it has stopped",
            "start it again: `tomlflow run` (it takes the lease over)",
        )
    else:
        report.add("scheduler", Level.OK, who)


def _judge_files(
    report: Report, files: list[tuple[str, str]], phases: list[tuple[str, str, str]]
) -> None:
    for path, error in files:
        report.add(
            "workflow file",
            Level.WARN,
            f"{path}: {error}",
            f"fix {path} (its last good phases still run); `tomlflow validate` checks it",
        )
    if phases:
        first = phases[0]
        report.add(
            "phases",
            Level.WARN,
            f"phases that cannot run: {len(phases)}, e.g. {first[0]} [{first[1]}]: {first[2]}",
            "`tomlflow validate` lists them; fix their rules",
        )
    if not files and not phases:
        report.add("workflows", Level.OK, "every file and phase loads")


def _judge_queue(report: Report, queued: health.Queued, now: datetime) -> None:
    if queued.oldest is None:
        report.add("queue", Level.OK, "nothing waiting to start")
        return
    waited = now - queued.oldest
    detail = f"{queued.count} ready to start, oldest due {iso(queued.oldest)[:19]}"
    if waited > QUEUE_WAIT:
        report.add(
            "queue",
            Level.WARN,
            detail,
            "is the scheduler running, with max_workers and concurrency to spare?",
        )
    else:
        report.add("queue", Level.OK, detail)


def _check_disk(report: Report, folder: Path) -> None:
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return
    detail = f"{human(usage.free)} free of {human(usage.total)} at {folder}"
    if usage.free < DISK_FAIL:
        report.add(
            "disk", Level.FAIL, detail, "free space (e.g. `tomlflow prune --older-than 90d`)"
        )
    elif usage.free < DISK_WARN_RATIO * usage.total:
        report.add("disk", Level.WARN, detail, "free space soon (e.g. `tomlflow prune`)")
    else:
        report.add("disk", Level.OK, detail)


def _check_backup(report: Report, config: Config, now: datetime) -> None:
    if config.backup is None:
        return
    try:
        made = datetime.fromtimestamp(config.backup.stat().st_mtime, now.tzinfo)
    except OSError:
        report.add(
            "backup",
            Level.WARN,
            f"no copy at {config.backup} yet",
            "it is made by the running scheduler; or run `tomlflow backup PATH`",
        )
        return
    late = now - made > 2 * config.backup_every
    level, action = (
        (Level.WARN, "is the scheduler running? see its log") if late else (Level.OK, "")
    )
    report.add("backup", level, f"last copy {iso(made)[:19]} at {config.backup}", action)


def human(size: int) -> str:
    """``size`` bytes the way people read them: 512 B, 3.2 KB, 41.0 MB, 1.2 GB."""
    amount = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:,.0f} {unit}" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")
