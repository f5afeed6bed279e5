"""The public schema: tables users query with SQL. Names and meanings are a contract.

Columns may be added, never renamed. Timestamps are UTC ISO 8601 text of one fixed width
(``2024-01-02T13:00:00.000000Z``), so they sort and compare correctly as text on every backend.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()

# The WHERE clauses of the partial indexes on executions, as the views write them.
TIMED_WHERE = "status IN ('complete', 'error', 'warn', 'alert') AND duration_seconds IS NOT NULL"
FAILED_WHERE = "status IN ('error', 'alert')"

workflow_files = Table(
    "workflow_files",
    metadata,
    Column("file_path", String(1024), primary_key=True),
    Column("file_hash", String(32), nullable=False),
    Column("loaded_at", String(32)),
    Column("last_modified", String(32)),
    Column("error", Text, nullable=False, server_default=""),
    # What stat said when the file was last read; refresh re-reads a file only when they differ.
    # NULL: unknown, or too recent to trust (racy), so the next refresh reads and hashes it.
    Column("file_size", BigInteger),
    Column("file_mtime_ns", BigInteger),
)

# One row, one number: database triggers change it with every insert, update and delete of
# workflow_files, whoever writes (store/workflows.py), so a process that keeps the table's stats
# between refreshes learns from one read whether they still hold. Compared, never counted:
# SQLite bumps it per row, PostgreSQL per statement.
workflow_files_changes = Table(
    "workflow_files_changes",
    metadata,
    Column("counter", BigInteger, nullable=False),
)

workflow_phases = Table(
    "workflow_phases",
    metadata,
    Column("file_path", String(1024), nullable=False),
    Column("task", String(512), nullable=False),
    Column("depends_on", String(512), nullable=False, server_default=""),
    Column("rule", Text, nullable=False, server_default=""),
    Column("template", Text, nullable=False, server_default=""),
    Column("retry", Integer, nullable=False, server_default="0"),
    Column("status", Text, nullable=False, server_default=""),
    # ok | warning | error: whether the status stops the phase (errors do, warnings don't).
    Column("severity", String(16), nullable=False, server_default="ok"),
    PrimaryKeyConstraint("file_path", "task"),
    Index("ix_workflow_phases_task", "task"),
    Index("ix_workflow_phases_depends_on", "depends_on"),
    Index("ix_workflow_phases_status", "status"),
)

# Scheduling state per phase. Kept apart from workflow_phases, whose rows are replaced whenever
# their file changes, so that editing a file never forgets how far a cron has been evaluated.
phase_state = Table(
    "phase_state",
    metadata,
    Column("file_path", String(1024), nullable=False),
    Column("task", String(512), nullable=False),
    Column("first_seen", String(32), nullable=False),
    Column("evaluated_until", String(32), nullable=False),
    Column("cron", Text, nullable=False, server_default=""),
    Column("next_fire", String(32)),
    Column("paused", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("file_path", "task"),
)

executions = Table(
    "executions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(64), nullable=False),
    Column("file_path", String(1024), nullable=False),
    Column("task", String(512), nullable=False),
    Column("topic", String(512), nullable=False),
    Column("job", String(512), nullable=False, server_default=""),
    Column("task_time", String(32)),
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("trigger", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("info", Text, nullable=False, server_default=""),
    Column("meta", Text, nullable=False, server_default="{}"),
    Column("msg", Text, nullable=False, server_default=""),
    Column("exit_code", Integer),
    Column("created_at", String(32), nullable=False),
    Column("started_at", String(32)),
    Column("ended_at", String(32)),
    Column("not_before", String(32), nullable=False),
    Column("parent_execution_id", Integer),
    Column("pid", Integer),
    # Set on a cron fire only ("<scheduled time>#<batch index>"), so that one phase's fire for one
    # scheduled time is inserted once, however often the scheduler restarts or races.
    Column("fire_key", String(64)),
    # ended_at - started_at in seconds, written with ended_at (NULL until both are set), so
    # that durations can be indexed and summed without date arithmetic.
    Column("duration_seconds", Double),
    UniqueConstraint("file_path", "task", "fire_key", name="uq_executions_fire"),
    Index("ix_executions_status_not_before", "status", "not_before"),
    Index("ix_executions_task_created", "task", "created_at"),
    Index("ix_executions_task_id", "task_id"),
    Index("ix_executions_parent", "parent_execution_id"),
    Index("ix_executions_created", "created_at"),
    # Partial: each phase's timed runs in duration order (p95, max) and its failures in id
    # order (last failure). A row enters each when it ends, so queued and running rows, the
    # engine's busiest writes, never touch them. Queries must repeat the WHERE to use them.
    Index(
        "ix_executions_phase_duration",
        "file_path",
        "task",
        "duration_seconds",
        sqlite_where=text(TIMED_WHERE),
        postgresql_where=text(TIMED_WHERE),
    ),
    Index(
        "ix_executions_phase_failure",
        "file_path",
        "task",
        "id",
        sqlite_where=text(FAILED_WHERE),
        postgresql_where=text(FAILED_WHERE),
    ),
)

execution_logs = Table(
    "execution_logs",
    metadata,
    Column("execution_id", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("ts", String(32), nullable=False),
    Column("stream", String(8), nullable=False),
    Column("line", Text, nullable=False),
    PrimaryKeyConstraint("execution_id", "seq"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("execution_id", Integer),
    Column("task_id", String(64), nullable=False, server_default=""),
    Column("file_path", String(1024), nullable=False, server_default=""),
    Column("task", String(512), nullable=False),
    Column("task_time", String(32)),
    Column("kind", String(16), nullable=False),  # failed | alert
    Column("msg", Text, nullable=False, server_default=""),
    Column("created_at", String(32), nullable=False),
    Column("notified_at", String(32)),
    Index("ix_alerts_created", "created_at"),
    Index("ix_alerts_notified_at", "notified_at"),
)

# One row while a scheduler runs (store/lease.py): who holds the database, and since when.
scheduler_lease = Table(
    "scheduler_lease",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("since", String(32), nullable=False),
    Column("heartbeat", String(32), nullable=False),
    # The holder's tick durations so far, a histogram as JSON, renewed with the heartbeat (the
    # dashboard's /metrics reads it: the daemon and the dashboard are separate processes).
    Column("ticks", Text),
)

# One row per reported file (``tomlflow file``, the watched folder), written in the transaction
# that queued its executions; a file that matched no phase is recorded too, with queued = 0.
file_reports = Table(
    "file_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False),  # as matched: an absolute local path, or a URL
    Column("source", String(16), nullable=False),  # command | watch
    Column("reported_at", String(32), nullable=False),
    Column("task_time", String(32)),  # the time named in the path, or NULL
    Column("queued", Integer, nullable=False, server_default="0"),
    Index("ix_file_reports_path", "path", "reported_at"),
    Index("ix_file_reports_reported_at", "reported_at"),
)

# Internal state of the watched folder (store/watched.py), so that a restart continues where
# the last run stopped. A root's row says stock was taken there once; watched_files holds each
# file as of the last poll (an emptied folder keeps its root row and has no file rows).
watched_roots = Table(
    "watched_roots",
    metadata,
    Column("root", Text, primary_key=True),
    Column("since", String(32), nullable=False),
)

watched_files = Table(
    "watched_files",
    metadata,
    Column("root", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("settling", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("root", "path"),
)

# How far each phase's deadlines (rule key sla) have been checked (store/deadlines.py), so a
# restart checks the scheduled times whose deadline passed while no scheduler ran, once.
sla_checks = Table(
    "sla_checks",
    metadata,
    Column("file_path", String(1024), nullable=False),
    Column("task", String(512), nullable=False),
    Column("checked_until", String(32), nullable=False),
    PrimaryKeyConstraint("file_path", "task"),
)

# A user's request to cancel a running execution (``tomlflow cancel``), until the scheduler that
# runs it has recorded its end. A table of its own, not a column, so the executions table (its
# triggers, views and hot statements) is untouched, and a request is simply consumed.
cancel_requests = Table(
    "cancel_requests",
    metadata,
    Column("execution_id", Integer, primary_key=True, autoincrement=False),
    Column("requested_at", String(32), nullable=False),
    Column("requested_by", String(255), nullable=False, server_default=""),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", String(32), nullable=False),
)
