"""The public views: ``phase_status``, ``task_relationships``, ``execution_stats``.

Written as plain SQL so users can read them with ``.schema`` and so one text serves SQLite and
PostgreSQL. The one dialect difference, how to turn two ISO timestamps into seconds, is filled in
per backend. Column names are a contract (docs/SCHEMA.md): add columns, never rename them.

Schema steps that change a view call ``create_all`` again, which drops and re-creates all three.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

_SECONDS = {
    "sqlite": "((julianday({end}) - julianday({start})) * 86400.0)",
    "postgresql": "EXTRACT(EPOCH FROM (CAST({end} AS timestamptz) - CAST({start} AS timestamptz)))",
}

# Statuses of an execution that ran its command to an end, so its duration means something.
RAN = "('complete', 'error', 'warn', 'alert')"
FAILED = "('error', 'alert')"

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

# Per phase, over finished executions. p95 is the nearest-rank percentile: the duration ranked
# ceil(0.95 n) among the n that ran, written with integer division ((95 n + 99) / 100) since
# SQLite has no CEIL everywhere. p95 and max are correlated subqueries per phase rather than one
# window over the whole table: they then walk the phase's slice of ix_executions_phase_duration
# (SQLite) in duration order, and a WHERE on task or file_path reaches every part of the view.
EXECUTION_STATS = """
WITH grouped AS (
    SELECT file_path, task,
           COUNT(*) AS runs,
           SUM(CASE WHEN status = 'complete' THEN 1 ELSE 0 END) AS complete,
           SUM(CASE WHEN status IN {failed} THEN 1 ELSE 0 END) AS error,
           SUM(CASE WHEN status = 'warn' THEN 1 ELSE 0 END) AS warn,
           SUM(CASE WHEN status = 'skipped' THEN 1 ELSE 0 END) AS skipped,
           SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled,
           SUM(CASE WHEN status IN {ran} THEN 1 ELSE 0 END) AS timed,
           AVG(CASE WHEN status IN {ran} THEN {seconds} END) AS avg_seconds,
           MAX(CASE WHEN status IN {failed} THEN id END) AS last_failure_id,
           MAX(id) AS last_id
    FROM executions
    WHERE status NOT IN ('queued', 'running'){where}
    GROUP BY file_path, task
)
SELECT g.file_path, g.task, g.runs, g.complete, g.error, g.warn, g.skipped, g.cancelled,
       ROUND(100.0 * g.complete / NULLIF(g.complete + g.error + g.warn, 0), 1) AS success_rate,
       g.avg_seconds,
       (SELECT {y_seconds} FROM executions y WHERE y.id = (
            SELECT r.id FROM (
                SELECT x.id, ROW_NUMBER() OVER (ORDER BY {x_seconds}) AS duration_rank
                FROM executions x
                WHERE x.file_path = g.file_path AND x.task = g.task
                  AND x.status IN {ran}{x_where}) r
            WHERE r.duration_rank = (95 * g.timed + 99) / 100)) AS p95_seconds,
       (SELECT {x_seconds} FROM executions x
        WHERE x.file_path = g.file_path AND x.task = g.task AND x.status IN {ran}{x_where}
        ORDER BY {x_seconds} DESC LIMIT 1) AS max_seconds,
       g.last_failure_id, lf.ended_at AS last_failure_at, lf.msg AS last_failure_msg,
       lr.created_at AS last_run_at
FROM grouped g
LEFT JOIN executions lf ON lf.id = g.last_failure_id
LEFT JOIN executions lr ON lr.id = g.last_id
"""

VIEW_NAMES = ("phase_status", "task_relationships", "execution_stats")


def seconds_between(dialect: str, start: str, end: str) -> str:
    """SQL for the seconds from ``start`` to ``end`` (two ISO timestamp expressions)."""
    return _SECONDS.get(dialect, _SECONDS["postgresql"]).format(start=start, end=end)


def execution_stats_select(dialect: str, since_param: str | None = None) -> str:
    """The SELECT behind ``execution_stats``; with ``since_param``, only executions created at
    or after the ``:<since_param>`` timestamp count (``tomlflow stats --since``)."""
    where = f"\n      AND created_at >= :{since_param}" if since_param else ""
    x_where = f" AND x.created_at >= :{since_param}" if since_param else ""
    return EXECUTION_STATS.format(
        seconds=duration_sql(dialect),
        x_seconds=duration_sql(dialect, "x."),
        y_seconds=duration_sql(dialect, "y."),
        ran=RAN, failed=FAILED, where=where, x_where=x_where,
    )


def duration_sql(dialect: str, prefix: str = "") -> str:
    """SQL for an execution's run time in seconds; ``prefix`` is a table alias and a dot.

    On SQLite this is also the text of ix_executions_phase_duration's expression, which the
    query planner matches word for word: change one, change both.
    """
    return seconds_between(dialect, f"{prefix}started_at", f"{prefix}ended_at")


def create_all(conn: Connection) -> None:
    """Create (or re-create) the current views for this connection's dialect."""
    _replace(conn, {
        "phase_status": PHASE_STATUS,
        "task_relationships": TASK_RELATIONSHIPS,
        "execution_stats": "CREATE VIEW execution_stats AS"
                           + execution_stats_select(conn.dialect.name),
    })


def _replace(conn: Connection, definitions: dict[str, str]) -> None:
    # Dropped before any is created, and PostgreSQL cannot CREATE OR REPLACE a view whose
    # columns changed, so drop-then-create is the one form that works on both.
    for name in definitions:
        conn.execute(text(f"DROP VIEW IF EXISTS {name}"))
    for sql in definitions.values():
        conn.execute(text(sql))
