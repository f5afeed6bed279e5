"""``phase_stats``: per phase, how many executions ended how, and their total run time.

It is what lets ``execution_stats`` answer without reading every execution. Database triggers
on ``executions`` keep it equal to a GROUP BY over the finished rows (status neither
``queued`` nor ``running``) after every insert, status or duration change and delete, so every
writer (the engine, reruns, prune, recovery, a user's own SQL) keeps it right without knowing
it exists. Counts are integers and run time is summed in whole microseconds, so adding and
removing rows never drifts.

``install`` also brings what the views read next to it: the stored ``executions
.duration_seconds`` (added and backfilled on databases made before it) and the partial indexes
that give each phase's durations and failures in order. It is idempotent, and the views'
``create_all`` calls it, because migration steps older than this one re-create the views too.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)

from scheduler.store import schema

# Statuses as SQL lists: still going, ran a command to an end (so a duration means something),
# and failed. A status outside ACTIVE is finished.
ACTIVE = "('queued', 'running')"
RAN = "('complete', 'error', 'warn', 'alert')"
FAILED = "('error', 'alert')"

_counts_meta = MetaData()

phase_stats = Table(
    "phase_stats",
    _counts_meta,
    Column("file_path", String(1024), nullable=False),
    Column("task", String(512), nullable=False),
    Column("runs", Integer, nullable=False, server_default="0"),
    Column("complete", Integer, nullable=False, server_default="0"),
    Column("error", Integer, nullable=False, server_default="0"),
    Column("alert", Integer, nullable=False, server_default="0"),
    Column("warn", Integer, nullable=False, server_default="0"),
    Column("skipped", Integer, nullable=False, server_default="0"),
    Column("cancelled", Integer, nullable=False, server_default="0"),
    Column("timed", Integer, nullable=False, server_default="0"),
    Column("total_microseconds", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("file_path", "task"),
)

_COUNTED = ("complete", "error", "alert", "warn", "skipped", "cancelled")
_SUMMED = ("runs", *_COUNTED, "timed", "total_microseconds")


def _contributions(row: str) -> list[str]:
    """SQL for what one finished ``row`` (NEW, OLD or a table name) adds to each of _SUMMED."""
    timed = f"{row}.status IN {RAN} AND {row}.duration_seconds IS NOT NULL"
    microseconds = f"CAST(ROUND({row}.duration_seconds * 1000000) AS BIGINT)"
    return [
        "1",
        *(f"CASE WHEN {row}.status = '{status}' THEN 1 ELSE 0 END" for status in _COUNTED),
        f"CASE WHEN {timed} THEN 1 ELSE 0 END",
        f"CASE WHEN {timed} THEN {microseconds} ELSE 0 END",
    ]


def _add(row: str) -> str:
    """Add finished ``row`` to its phase's counts (creating the phase's row when new)."""
    names = ", ".join(("file_path", "task", *_SUMMED))
    values = ", ".join((f"{row}.file_path", f"{row}.task", *_contributions(row)))
    sums = ", ".join(f"{c} = phase_stats.{c} + excluded.{c}" for c in _SUMMED)
    return (
        f"INSERT INTO phase_stats ({names}) VALUES ({values}) "
        f"ON CONFLICT (file_path, task) DO UPDATE SET {sums}"
    )


def _subtract(row: str) -> str:
    """Take finished ``row`` out of its phase's counts."""
    sums = ", ".join(
        f"{c} = {c} - ({e})" for c, e in zip(_SUMMED, _contributions(row), strict=True)
    )
    return f"UPDATE phase_stats SET {sums} WHERE file_path = {row}.file_path AND task = {row}.task"


_WATCHED = "status, duration_seconds, file_path, task"

# One trigger per case, each guarded by WHEN, so the engine's most common write (a queued row
# inserted, or a queued row marked running) runs no trigger body at all.
_SQLITE_TRIGGERS = {
    "trg_phase_stats_insert": (
        f"AFTER INSERT ON executions WHEN NEW.status NOT IN {ACTIVE}",
        _add("NEW"),
    ),
    "trg_phase_stats_leave": (
        f"AFTER UPDATE OF {_WATCHED} ON executions WHEN OLD.status NOT IN {ACTIVE}",
        _subtract("OLD"),
    ),
    "trg_phase_stats_enter": (
        f"AFTER UPDATE OF {_WATCHED} ON executions WHEN NEW.status NOT IN {ACTIVE}",
        _add("NEW"),
    ),
    "trg_phase_stats_delete": (
        f"AFTER DELETE ON executions WHEN OLD.status NOT IN {ACTIVE}",
        _subtract("OLD"),
    ),
}

# PostgreSQL: one plpgsql function for all three events, mirroring the SQLite triggers
# statement for statement (tests/test_phase_stats.py runs on both in CI: .ci/postgres).
_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION phase_stats_track() RETURNS trigger LANGUAGE plpgsql AS $body$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.status NOT IN {ACTIVE} THEN
            {_subtract("OLD")};
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.status NOT IN {ACTIVE} THEN
            {_add("NEW")};
        END IF;
    END IF;
    RETURN NULL;
END
$body$
"""
_PG_TRIGGER = (
    f"CREATE TRIGGER trg_phase_stats AFTER INSERT OR DELETE OR UPDATE OF {_WATCHED} "
    "ON executions FOR EACH ROW EXECUTE FUNCTION phase_stats_track()"
)

# Seconds from started_at to ended_at, exact to the microsecond, for the backfill. SQLite's
# julianday() is only good to about 50 microseconds at today's dates, so the fixed-width text
# (``YYYY-MM-DDTHH:MM:SS.ffffffZ``) is split into whole seconds and microseconds instead.
_EXACT_SECONDS = {
    "sqlite": (
        "(CAST(strftime('%s', substr(ended_at, 1, 19)) AS INTEGER)"
        " - CAST(strftime('%s', substr(started_at, 1, 19)) AS INTEGER))"
        " + (CAST(substr(ended_at, 21, 6) AS INTEGER)"
        " - CAST(substr(started_at, 21, 6) AS INTEGER)) / 1000000.0"
    ),
    "postgresql": (
        "EXTRACT(EPOCH FROM (CAST(ended_at AS timestamptz) - CAST(started_at AS timestamptz)))"
    ),
}

_DURATION_INDEX = "ix_executions_phase_duration"


def install(conn: Connection) -> None:
    """Make sure ``duration_seconds``, the duration and failure indexes, ``phase_stats`` and
    its triggers exist and are filled in; cheap when they already do."""
    _add_duration_column(conn)
    _index_durations(conn)
    if not conn.dialect.has_table(conn, "phase_stats"):
        phase_stats.create(conn)
        conn.execute(text(_backfill_counts()))
    _create_triggers(conn)


def _add_duration_column(conn: Connection) -> None:
    columns = {c["name"] for c in inspect(conn).get_columns("executions")}
    if "duration_seconds" in columns:
        return
    kind = schema.executions.c.duration_seconds.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE executions ADD COLUMN duration_seconds {kind}"))
    seconds = _EXACT_SECONDS.get(conn.dialect.name, _EXACT_SECONDS["postgresql"])
    conn.execute(
        text(
            f"UPDATE executions SET duration_seconds = {seconds} "
            "WHERE started_at IS NOT NULL AND ended_at IS NOT NULL"
        )
    )


def _index_durations(conn: Connection) -> None:
    """Create the two partial indexes of schema.py; replace the duration index of schema
    version 3 (an expression over the timestamps, with status) if that is the one present."""
    definition = _index_definition(conn, _DURATION_INDEX)
    if definition is not None and "duration_seconds" not in definition:
        conn.execute(text(f"DROP INDEX {_DURATION_INDEX}"))
    for index in schema.executions.indexes:
        if index.name in (_DURATION_INDEX, "ix_executions_phase_failure"):
            index.create(conn, checkfirst=True)


def _index_definition(conn: Connection, name: str) -> str | None:
    """The CREATE INDEX text of index ``name``, or None when there is none. (SQLAlchemy's
    reflection skips expression indexes, which is what version 3's was.)"""
    if conn.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    value = conn.execute(text(query), {"name": name}).scalar()
    return None if value is None else str(value)


def _backfill_counts() -> str:
    # runs contributes 1 per row: COUNT(*); every other column sums its contribution.
    sums = ", ".join(["COUNT(*)", *(f"SUM({e})" for e in _contributions("executions")[1:])])
    names = ", ".join(("file_path", "task", *_SUMMED))
    return (
        f"INSERT INTO phase_stats ({names}) "
        f"SELECT file_path, task, {sums} FROM executions "
        f"WHERE status NOT IN {ACTIVE} GROUP BY file_path, task"
    )


def _create_triggers(conn: Connection) -> None:
    """(Re)create the triggers, so a database always has this version's definitions."""
    if conn.dialect.name == "sqlite":
        for name, (when, body) in _SQLITE_TRIGGERS.items():
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE TRIGGER {name} {when} BEGIN {body}; END")
        return
    conn.exec_driver_sql(_PG_FUNCTION)
    conn.exec_driver_sql("DROP TRIGGER IF EXISTS trg_phase_stats ON executions")
    conn.exec_driver_sql(_PG_TRIGGER)
