"""The public views: ``phase_status``, ``task_relationships``, ``execution_stats``.

Written as plain SQL so users can read them with ``.schema`` and so one text serves SQLite and
PostgreSQL. ``execution_stats`` reads the trigger-kept ``phase_stats`` summary and the stored
``duration_seconds`` (store/phase_stats.py). Column names are a contract (docs/SCHEMA.md): add
columns, never rename them.

Schema steps that change a view call ``create_all`` again, which drops and re-creates all three.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from scheduler.store import phase_stats
from scheduler.store.phase_stats import ACTIVE, FAILED, RAN

_SECONDS = {
    "sqlite": "((julianday({end}) - julianday({start})) * 86400.0)",
    "postgresql": "EXTRACT(EPOCH FROM (CAST({end} AS timestamptz) - CAST({start} AS timestamptz)))",
}

PHASE_STATUS = """
CREATE VIEW phase_status AS
SELECT p.file_path, p.task, p.depends_on, p.rule, p.template, p.retry, p.status, p.severity,
       COALESCE(s.paused, 0) AS paused,
       e.id AS last_execution_id, e.status AS last_status, e.task_time AS last_task_time,
       e.attempt AS last_attempt, e.trigger AS last_trigger, e.created_at AS last_created_at,
       e.started_at AS last_started_at, e.ended_at AS last_ended_at, e.msg AS last_msg,
       s.next_fire
FROM workflow_phases p
LEFT JOIN phase_state s ON s.file_path = p.file_path AND s.task = p.task
LEFT JOIN executions e ON e.id = (
    SELECT MAX(x.id) FROM executions x WHERE x.file_path = p.file_path AND x.task = p.task)
"""

TASK_RELATIONSHIPS = """
CREATE VIEW task_relationships AS
SELECT parent.task AS parent_task, child.task AS child_task, child.file_path
FROM workflow_phases child
JOIN workflow_phases parent
  ON parent.file_path = child.file_path
 AND child.depends_on <> ''
 AND (parent.task = child.depends_on
      OR (child.depends_on NOT LIKE '%:%'
          AND (parent.task = child.depends_on OR parent.task LIKE child.depends_on || ':%')))
"""

# Per phase, over finished executions. The counts and the average come from phase_stats, kept by
# triggers; the rest are a few index seeks per phase, so a WHERE on task or file_path reaches
# every part of the view and the whole view never reads every execution:
# - max: the top of the phase's slice of ix_executions_phase_duration (partial: timed runs only,
#   which is why each subquery repeats its WHERE word for word).
# - p95 is the nearest-rank percentile: the duration ranked k = ceil(0.95 n) among the n timed
#   runs, written (95 n + 99) / 100 since SQLite has no CEIL everywhere. SQLite refuses a
#   correlated OFFSET, so the rank is a ROW_NUMBER over the slice walked from the longest
#   down: the k-th shortest is the (n + 1 - k)-th longest, found after reading about 5 % of the
#   slice, where counting up from the shortest would read 95 %.
# - last failure: the top of the phase's slice of ix_executions_phase_failure; the last run:
#   the phase's newest rows by ix_executions_phase_id until one is finished.
_TIMED_X = (
    "x.file_path = g.file_path AND x.task = g.task"
    f" AND x.status IN {RAN} AND x.duration_seconds IS NOT NULL"
)

# The columns, in their contracted order, over a per-phase source ``g`` that has file_path,
# task, runs, complete, error (with alert), warn, skipped, cancelled, timed, avg_seconds,
# last_failure_id and last_id.
_STATS_COLUMNS = """
SELECT g.file_path, g.task, g.runs, g.complete, g.error, g.warn, g.skipped, g.cancelled,
       ROUND(100.0 * g.complete / NULLIF(g.complete + g.error + g.warn, 0), 1) AS success_rate,
       g.avg_seconds,
       (SELECT r.seconds FROM (
            SELECT x.duration_seconds AS seconds,
                   ROW_NUMBER() OVER (ORDER BY x.duration_seconds DESC) AS from_longest
            FROM executions x
            WHERE {timed}{x_where}) r
        WHERE r.from_longest = g.timed + 1 - (95 * g.timed + 99) / 100
        LIMIT 1) AS p95_seconds,
       (SELECT x.duration_seconds FROM executions x
        WHERE {timed}{x_where}
        ORDER BY x.duration_seconds DESC LIMIT 1) AS max_seconds,
       g.last_failure_id, lf.ended_at AS last_failure_at, lf.msg AS last_failure_msg,
       lr.created_at AS last_run_at
FROM g
LEFT JOIN executions lf ON lf.id = g.last_failure_id
LEFT JOIN executions lr ON lr.id = g.last_id
"""

# All time: the counts as the triggers keep them.
_FROM_SUMMARY = f"""
WITH g AS (
    SELECT s.file_path, s.task, s.runs, s.complete, s.error + s.alert AS error, s.warn,
           s.skipped, s.cancelled, s.timed,
           s.total_microseconds / 1000000.0 / NULLIF(s.timed, 0) AS avg_seconds,
           (SELECT MAX(x.id) FROM executions x
            WHERE x.file_path = s.file_path AND x.task = s.task
              AND x.status IN {FAILED}) AS last_failure_id,
           (SELECT x.id FROM executions x
            WHERE x.file_path = s.file_path AND x.task = s.task AND x.status NOT IN {ACTIVE}
            ORDER BY x.id DESC LIMIT 1) AS last_id
    FROM phase_stats s
    WHERE s.runs > 0
)"""

# Since a time (``tomlflow stats --since``): counted from the executions created since then.
# phase_stats lists every phase with a finished execution, so starting from it reads each
# phase's recent rows through ix_executions_task_created instead of the whole table.
_FROM_EXECUTIONS = f"""
WITH g AS (
    SELECT s.file_path, s.task,
           COUNT(*) AS runs,
           SUM(CASE WHEN e.status = 'complete' THEN 1 ELSE 0 END) AS complete,
           SUM(CASE WHEN e.status IN {FAILED} THEN 1 ELSE 0 END) AS error,
           SUM(CASE WHEN e.status = 'warn' THEN 1 ELSE 0 END) AS warn,
           SUM(CASE WHEN e.status = 'skipped' THEN 1 ELSE 0 END) AS skipped,
           SUM(CASE WHEN e.status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
           SUM(CASE WHEN e.status IN {RAN} AND e.duration_seconds IS NOT NULL
                    THEN 1 ELSE 0 END) AS timed,
           AVG(CASE WHEN e.status IN {RAN} THEN e.duration_seconds END) AS avg_seconds,
           MAX(CASE WHEN e.status IN {FAILED} THEN e.id END) AS last_failure_id,
           MAX(e.id) AS last_id
    FROM phase_stats s
    JOIN executions e ON e.task = s.task AND e.file_path = s.file_path
    WHERE e.status NOT IN {ACTIVE} AND e.created_at >= :{{since}}
    GROUP BY s.file_path, s.task
)"""


VIEW_NAMES = ("phase_status", "task_relationships", "execution_stats")


def seconds_between(dialect: str, start: str, end: str) -> str:
    """SQL for the seconds from ``start`` to ``end`` (two ISO timestamp expressions)."""
    return _SECONDS.get(dialect, _SECONDS["postgresql"]).format(start=start, end=end)


def execution_stats_select(since_param: str | None = None) -> str:
    """The SELECT behind ``execution_stats``; with ``since_param``, only executions created at
    or after the ``:<since_param>`` timestamp count (``tomlflow stats --since``). The two give
    the same rows over the same executions, on every backend (durations are stored)."""
    if since_param is None:
        return _FROM_SUMMARY + _STATS_COLUMNS.format(timed=_TIMED_X, x_where="")
    x_where = f" AND x.created_at >= :{since_param}"
    return _FROM_EXECUTIONS.format(since=since_param) + _STATS_COLUMNS.format(
        timed=_TIMED_X, x_where=x_where
    )


def duration_sql(dialect: str, prefix: str = "") -> str:
    """SQL for an execution's run time in seconds from its timestamps; ``prefix`` is a table
    alias and a dot. Only schema step 3 uses it (it indexed this expression); everything else
    reads the stored ``duration_seconds``."""
    return seconds_between(dialect, f"{prefix}started_at", f"{prefix}ended_at")


def create_all(conn: Connection) -> None:
    """Create (or re-create) the current views for this connection's dialect, after what they
    read: the migration steps that made older views call this too, on databases that may not
    have ``duration_seconds`` or ``phase_stats`` yet (``phase_stats.install`` is idempotent)."""
    phase_stats.install(conn)
    _replace(
        conn,
        {
            "phase_status": PHASE_STATUS,
            "task_relationships": TASK_RELATIONSHIPS,
            "execution_stats": "CREATE VIEW execution_stats AS"
            + execution_stats_select(),
        },
    )


def _replace(conn: Connection, definitions: dict[str, str]) -> None:
    # Dropped before any is created, and PostgreSQL cannot CREATE OR REPLACE a view whose
    # columns changed, so drop-then-create is the one form that works on both.
    for name in definitions:
        conn.execute(text(f"DROP VIEW IF EXISTS {name}"))
    for sql in definitions.values():
        conn.execute(text(sql))
