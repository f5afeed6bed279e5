"""The public views: ``phase_status``, ``task_relationships``, ``execution_stats``.

Written as plain SQL so users can read them with ``.schema``; the one dialect difference, how
to turn two ISO timestamps into seconds, is filled in per backend.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

_SECONDS = {
    "sqlite": "((julianday({end}) - julianday({start})) * 86400.0)",
    "postgresql": "EXTRACT(EPOCH FROM (CAST({end} AS timestamptz) - CAST({start} AS timestamptz)))",
}

PHASE_STATUS = """
CREATE VIEW phase_status AS
SELECT p.file_path, p.task, p.depends_on, p.rule, p.status, p.severity,
       COALESCE(s.paused, 0) AS paused,
       e.id AS last_execution_id, e.status AS last_status, e.task_time AS last_task_time,
       e.started_at AS last_started_at, e.ended_at AS last_ended_at, e.msg AS last_msg,
       s.next_fire
FROM workflow_phases p
LEFT JOIN phase_state s ON s.file_path = p.file_path AND s.task = p.task
LEFT JOIN executions e ON e.id = (
    SELECT x.id FROM executions x
    WHERE x.task = p.task AND x.file_path = p.file_path
    ORDER BY x.created_at DESC, x.id DESC LIMIT 1)
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

EXECUTION_STATS = """
CREATE VIEW execution_stats AS
SELECT task,
       COUNT(*) AS runs,
       SUM(CASE WHEN status = 'complete' THEN 1 ELSE 0 END) AS complete,
       SUM(CASE WHEN status IN ('error', 'alert') THEN 1 ELSE 0 END) AS error,
       ROUND(100.0 * SUM(CASE WHEN status = 'complete' THEN 1 ELSE 0 END)
             / NULLIF(SUM(CASE WHEN status IN ('complete', 'error', 'warn', 'alert')
                               THEN 1 ELSE 0 END), 0), 1) AS success_rate,
       AVG({seconds}) AS avg_seconds,
       MAX({seconds}) AS max_seconds,
       MAX(CASE WHEN status IN ('error', 'alert') THEN ended_at END) AS last_failure_at,
       MAX(created_at) AS last_run_at
FROM executions
WHERE status NOT IN ('queued', 'running')
GROUP BY task
"""


def create_all(conn: Connection) -> None:
    """Create (or re-create) every view for this connection's dialect."""
    seconds = _SECONDS.get(conn.dialect.name, _SECONDS["postgresql"])
    duration = seconds.format(end="ended_at", start="started_at")
    for name, sql in (
        ("phase_status", PHASE_STATUS),
        ("task_relationships", TASK_RELATIONSHIPS),
        ("execution_stats", EXECUTION_STATS.format(seconds=duration)),
    ):
        conn.execute(text(f"DROP VIEW IF EXISTS {name}"))
        conn.execute(text(sql))
