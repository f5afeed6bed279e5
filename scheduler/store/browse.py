"""Read queries for browsing history: filtered run listings, counts for charts, alerts, file
reports, and database facts. The web dashboard and ``tomlflow history`` share them.

Every listing is bounded: pages are keyset-paginated by id (a deep page costs what the first
does, which OFFSET would not at a million rows), counts stop at a cap, and charts group a
bounded time window through ``ix_executions_created``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, bindparam, case, func, select, text

from scheduler.store.history import Execution, LogRow, PhaseState, Status, Trigger
from scheduler.store.schema import (
    alerts,
    execution_logs,
    executions,
    file_reports,
    metadata,
    phase_state,
    workflow_files,
    workflow_phases,
)
from scheduler.store.views import seconds_between
from scheduler.tasktime import from_iso, iso

MAX_PAGE = 500
COUNT_CAP = 10_000
EXPORT_CAP = 100_000
_EXPORT_BATCH = 1000
_FAILED = (Status.ERROR.value, Status.ALERT.value)


@dataclass(frozen=True)
class RunFilter:
    """Which executions to list. ``since``/``until`` bound ``created_at`` and ``tt_from``/
    ``tt_to`` bound ``task_time``; lower bounds inclusive, upper bounds exclusive."""

    task: str | None = None
    file_path: str | None = None
    status: Status | None = None
    trigger: Trigger | None = None
    since: datetime | None = None
    until: datetime | None = None
    tt_from: datetime | None = None
    tt_to: datetime | None = None

    def terms(self) -> list[ColumnElement[bool]]:
        c = executions.c
        terms: list[ColumnElement[bool]] = []
        for column, value in (
            (c.task, self.task),
            (c.file_path, self.file_path),
            (c.status, self.status.value if self.status else None),
            (c.trigger, self.trigger.value if self.trigger else None),
        ):
            if value:
                terms.append(column == value)
        for column, low, high in (
            (c.created_at, self.since, self.until),
            (c.task_time, self.tt_from, self.tt_to),
        ):
            if low is not None:
                terms.append(column >= iso(low))
            if high is not None:
                terms.append(column < iso(high))
        return terms


@dataclass(frozen=True)
class RunPage:
    """Up to ``limit`` executions, newest first. ``older``/``newer`` are the ``before``/
    ``after`` ids of the neighbouring pages, None at either end. ``total`` counts the matching
    executions up to COUNT_CAP (a larger number means "more than COUNT_CAP")."""

    rows: list[Execution]
    older: int | None
    newer: int | None
    total: int


def list_runs(
    conn: Connection,
    where: RunFilter,
    limit: int = 50,
    *,
    before: int | None = None,
    after: int | None = None,
) -> RunPage:
    """Executions matching ``where``, newest first: the page below id ``before``, or the one
    above id ``after``, or the newest; ``limit`` is clamped to 1..MAX_PAGE.

    A filter first collects the ids it matches through its own index (task, status, created
    time), stopping past COUNT_CAP: when that many or fewer match, the page is cut from those
    ids, so a rare status or an empty range never walks the table in id order. A filter that
    matches more (a common status) is dense enough that walking the newest ids finds a page
    at once.
    """
    limit = max(1, min(MAX_PAGE, limit))
    terms = where.terms()
    if terms:
        query = select(executions.c.id).where(*terms).limit(COUNT_CAP + 1)
        ids = [r[0] for r in conn.execute(query)]
        if len(ids) <= COUNT_CAP:
            return _page_of_ids(conn, sorted(ids, reverse=True), limit, before, after)
        return _page_in_id_order(conn, where, limit, before, after, len(ids))
    return _page_in_id_order(conn, where, limit, before, after, count_runs(conn, where, COUNT_CAP))


def _page_of_ids(
    conn: Connection, ids: list[int], limit: int, before: int | None, after: int | None
) -> RunPage:
    """The page of ``ids`` (all matches, newest first) below ``before`` or above ``after``."""
    if after is not None:
        above = [i for i in ids if i > after]
        chosen = above[-limit:]
    else:
        chosen = [i for i in ids if before is None or i < before][:limit]
    rows = _by_ids(conn, chosen)
    older = chosen[-1] if chosen and chosen[-1] > ids[-1] else None
    newer = chosen[0] if chosen and chosen[0] < ids[0] else None
    return RunPage(rows, older, newer, len(ids))


def _by_ids(conn: Connection, ids: list[int]) -> list[Execution]:
    if not ids:
        return []
    query = select(executions).where(executions.c.id.in_(ids)).order_by(executions.c.id.desc())
    return [Execution.from_row(r) for r in conn.execute(query)]


def _page_in_id_order(
    conn: Connection,
    where: RunFilter,
    limit: int,
    before: int | None,
    after: int | None,
    total: int,
) -> RunPage:
    c = executions.c
    query = select(executions).where(*where.terms())
    if after is not None:
        query = query.where(c.id > after).order_by(c.id.asc())
    else:
        if before is not None:
            query = query.where(c.id < before)
        query = query.order_by(c.id.desc())
    found = [Execution.from_row(r) for r in conn.execute(query.limit(limit + 1))]
    more = len(found) > limit
    found = found[:limit]
    if after is not None:
        found.reverse()
        older = found[-1].id if found and _exists(conn, where, below=found[-1].id) else None
        return RunPage(found, older, found[0].id if found and more else None, total)
    newer = found[0].id if found and before is not None else None
    return RunPage(found, found[-1].id if found and more else None, newer, total)


def _exists(conn: Connection, where: RunFilter, *, below: int) -> bool:
    query = select(executions.c.id).where(*where.terms(), executions.c.id < below).limit(1)
    return conn.execute(query).first() is not None


def count_runs(conn: Connection, where: RunFilter, cap: int = COUNT_CAP) -> int:
    """How many executions match, counting at most ``cap + 1`` (more than ``cap`` means
    "more than cap"), so a count never reads a million rows."""
    inner = select(executions.c.id).where(*where.terms()).limit(cap + 1).subquery()
    return int(conn.scalar(select(func.count()).select_from(inner)) or 0)


def iter_runs(conn: Connection, where: RunFilter, cap: int = EXPORT_CAP) -> Iterator[Execution]:
    """Every execution matching ``where``, newest first, at most ``cap``, read in batches
    (keyset by id) so an export never holds the whole set in memory."""
    sent, before = 0, None
    while sent < cap:
        page = list_runs(conn, where, min(_EXPORT_BATCH, cap - sent), before=before)
        yield from page.rows
        sent += len(page.rows)
        if page.older is None:
            return
        before = page.older


# -- one run and its chain -----------------------------------------------------------------------


def attempts_of(conn: Connection, execution: Execution) -> list[Execution]:
    """Every attempt of the same task (chain, phase, task time), oldest first."""
    c = executions.c
    same_time = (
        c.task_time.is_(None)
        if execution.task_time is None
        else c.task_time == iso(execution.task_time)
    )
    query = (
        select(executions)
        .where(
            c.task_id == execution.task_id,
            c.file_path == execution.file_path,
            c.task == execution.task,
            same_time,
        )
        .order_by(c.id)
        .limit(MAX_PAGE)
    )
    return [Execution.from_row(r) for r in conn.execute(query)]


def chain_of(conn: Connection, task_id: str, limit: int = 200) -> list[Execution]:
    """The executions of one chain (``task_id``), oldest first, at most ``limit``."""
    c = executions.c
    query = select(executions).where(c.task_id == task_id).order_by(c.id).limit(limit)
    return [Execution.from_row(r) for r in conn.execute(query)]


def children_of(conn: Connection, execution_id: int, limit: int = 100) -> list[Execution]:
    c = executions.c
    query = (
        select(executions).where(c.parent_execution_id == execution_id).order_by(c.id).limit(limit)
    )
    return [Execution.from_row(r) for r in conn.execute(query)]


def log_lines(
    conn: Connection,
    execution_id: int,
    *,
    after_seq: int = -1,
    search: str = "",
    limit: int = 2000,
) -> list[LogRow]:
    """Up to ``limit`` output lines of one execution with ``seq`` above ``after_seq``, in
    order; with ``search``, only lines containing it (case-insensitive)."""
    c = execution_logs.c
    query = select(execution_logs).where(c.execution_id == execution_id, c.seq > after_seq)
    if search:
        query = query.where(func.lower(c.line).contains(search.lower(), autoescape=True))
    query = query.order_by(c.seq).limit(limit)
    return [
        LogRow(r.execution_id, r.seq, from_iso(r.ts), r.stream, r.line) for r in conn.execute(query)
    ]


def log_count(conn: Connection, execution_id: int) -> int:
    query = select(func.count()).where(execution_logs.c.execution_id == execution_id)
    return int(conn.scalar(query) or 0)


# -- per phase -----------------------------------------------------------------------------------


def phase_runs(conn: Connection, file_path: str, task: str, limit: int = 100) -> list[Execution]:
    """The phase's newest executions, newest first (``ix_executions_phase_id``)."""
    c = executions.c
    query = (
        select(executions)
        .where(c.file_path == file_path, c.task == task)
        .order_by(c.id.desc())
        .limit(max(1, min(MAX_PAGE, limit)))
    )
    return [Execution.from_row(r) for r in conn.execute(query)]


@dataclass(frozen=True)
class Cell:
    """One execution as the runs-by-phases grid shows it."""

    id: int
    task: str
    task_time: str | None
    status: str


def newest_cells(conn: Connection, file_path: str, tasks: list[str], per_task: int) -> list[Cell]:
    """The newest ``per_task`` executions of each of ``tasks`` in ``file_path``: one seek per
    phase down ``ix_executions_phase_id``, newest first overall."""
    cells: list[Cell] = []
    for task in tasks:
        params = {"f": file_path, "t": task, "n": per_task}
        cells.extend(Cell(*r) for r in conn.execute(_NEWEST_CELLS, params))
    return sorted(cells, key=lambda cell: cell.id, reverse=True)


_NEWEST_CELLS = (
    select(executions.c.id, executions.c.task, executions.c.task_time, executions.c.status)
    .where(executions.c.file_path == bindparam("f"), executions.c.task == bindparam("t"))
    .order_by(executions.c.id.desc())
    .limit(bindparam("n"))
)


@dataclass(frozen=True)
class PhaseCounts:
    runs: int = 0
    complete: int = 0
    failed: int = 0
    warn: int = 0
    skipped: int = 0
    cancelled: int = 0

    @property
    def success_rate(self) -> float | None:
        ran = self.complete + self.failed + self.warn
        return round(100.0 * self.complete / ran, 1) if ran else None


def phase_counts(conn: Connection) -> dict[tuple[str, str], PhaseCounts]:
    """Finished executions per phase by outcome, from the trigger-kept ``phase_stats``."""
    rows = conn.execute(
        text(
            "SELECT file_path, task, runs, complete, error + alert AS failed, warn, skipped,"
            " cancelled FROM phase_stats"
        )
    )
    return {(r[0], r[1]): PhaseCounts(*r[2:]) for r in rows}


def phase_counts_of(conn: Connection, file_path: str, task: str) -> PhaseCounts:
    row = conn.execute(
        text(
            "SELECT runs, complete, error + alert AS failed, warn, skipped, cancelled"
            " FROM phase_stats WHERE file_path = :f AND task = :t"
        ),
        {"f": file_path, "t": task},
    ).first()
    return PhaseCounts(*row) if row else PhaseCounts()


def active_counts(conn: Connection) -> dict[tuple[str, str, str], int]:
    """Queued and running executions per (file, task, status), counted here from the status
    index (a GROUP BY would make the database walk a phase index over every execution)."""
    c = executions.c
    counts: dict[tuple[str, str, str], int] = {}
    for status in (Status.QUEUED.value, Status.RUNNING.value):
        query = select(c.file_path, c.task).where(c.status == status)
        for file_path, task in conn.execute(query):
            key = (file_path, task, status)
            counts[key] = counts.get(key, 0) + 1
    return counts


# -- charts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buckets:
    """Execution counts by time bucket (the ISO prefix: ``2024-01-02T13`` or ``2024-01-02``)
    and status."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def total(self, bucket: str) -> int:
        return sum(self.counts.get(bucket, {}).values())

    def by_status(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for per in self.counts.values():
            for status, n in per.items():
                totals[status] = totals.get(status, 0) + n
        return totals


def hourly_counts(conn: Connection, since: datetime, until: datetime) -> Buckets:
    """Executions created in [since, until) by hour and status."""
    return _buckets(conn, since, until, 13)


def _buckets(conn: Connection, since: datetime, until: datetime, width: int) -> Buckets:
    c = executions.c
    bucket = func.substr(c.created_at, 1, width)
    query = (
        select(bucket, c.status, func.count())
        .where(c.created_at >= iso(since), c.created_at < iso(until))
        .group_by(bucket, c.status)
    )
    counts: dict[str, dict[str, int]] = {}
    for key, status, n in conn.execute(query):
        counts.setdefault(key, {})[status] = int(n)
    return Buckets(counts)


def daily_totals(conn: Connection, since: datetime, until: datetime) -> dict[str, int]:
    """Executions created per day in [since, until); reads only ``ix_executions_created``."""
    c = executions.c
    day = func.substr(c.created_at, 1, 10)
    query = (
        select(day, func.count())
        .where(c.created_at >= iso(since), c.created_at < iso(until))
        .group_by(day)
    )
    return {key: int(n) for key, n in conn.execute(query)}


def cron_lateness(conn: Connection, since: datetime, limit: int = 5000) -> list[float]:
    """Seconds from the scheduled time (``not_before`` of a first attempt) to the start of the
    cron executions created since ``since``, at most ``limit`` of them."""
    seconds = seconds_between(conn.dialect.name, "not_before", "started_at")
    rows = conn.execute(
        text(
            f"SELECT {seconds} FROM executions WHERE created_at >= :since AND trigger = 'cron'"
            " AND attempt = 1 AND started_at IS NOT NULL LIMIT :n"
        ),
        {"since": iso(since), "n": limit},
    )
    return [round(max(0.0, float(r[0])), 3) for r in rows]  # julianday is ~10 µs off


# -- overview lists ------------------------------------------------------------------------------


def executions_with_status(conn: Connection, status: Status, limit: int = 100) -> list[Execution]:
    """The oldest ``limit`` executions with ``status`` (meant for the rare ones: queued,
    running). Read through the status index without an ORDER BY, which could walk every id."""
    query = select(executions.c.id).where(executions.c.status == status.value)
    ids = sorted(r[0] for r in conn.execute(query))[:limit]
    return _by_ids(conn, ids)[::-1]


def recent_failures(conn: Connection, limit: int = 10) -> list[Execution]:
    """The newest executions that ended ``error`` or ``alert``, newest first."""
    c = executions.c
    query = select(executions).where(c.status.in_(_FAILED)).order_by(c.id.desc()).limit(limit)
    return [Execution.from_row(r) for r in conn.execute(query)]


@dataclass(frozen=True)
class AlertRow:
    id: int
    execution_id: int | None
    file_path: str
    task: str
    task_time: str | None
    kind: str
    msg: str
    created_at: str


def list_alerts(
    conn: Connection,
    *,
    day: str | None = None,
    task: str | None = None,
    limit: int = 200,
    before: int | None = None,
) -> list[AlertRow]:
    """Alerts newest first: of one UTC ``day`` (``YYYY-MM-DD``) and/or one task, below id
    ``before``, at most ``limit`` (clamped to MAX_PAGE)."""
    a = alerts.c
    query = select(alerts).order_by(a.id.desc()).limit(max(1, min(MAX_PAGE, limit)))
    if day:
        query = query.where(a.created_at >= day, a.created_at < day + "U")  # 'T' < 'U'
    if task:
        query = query.where(a.task == task)
    if before is not None:
        query = query.where(a.id < before)
    return [
        AlertRow(
            r.id, r.execution_id, r.file_path, r.task, r.task_time, r.kind, r.msg, r.created_at
        )
        for r in conn.execute(query)
    ]


@dataclass(frozen=True)
class FileReportRow:
    id: int
    path: str
    source: str
    reported_at: str
    task_time: str | None
    queued: int


def list_file_reports(
    conn: Connection, *, path: str | None = None, limit: int = 100, before: int | None = None
) -> list[FileReportRow]:
    """File reports newest first; with ``path``, the reports whose path contains it."""
    f = file_reports.c
    query = select(file_reports).order_by(f.id.desc()).limit(max(1, min(MAX_PAGE, limit)))
    if path:
        query = query.where(f.path.contains(path, autoescape=True))
    if before is not None:
        query = query.where(f.id < before)
    return [
        FileReportRow(r.id, r.path, r.source, r.reported_at, r.task_time, r.queued)
        for r in conn.execute(query)
    ]


def file_report_runs(conn: Connection, report: FileReportRow, limit: int = 50) -> list[Execution]:
    """The executions a file report queued: file-triggered rows created at its report time
    whose meta names its path (``{meta:file}``)."""
    c = executions.c
    query = (
        select(executions)
        .where(c.trigger == Trigger.FILE.value, c.created_at == report.reported_at)
        .order_by(c.id)
        .limit(MAX_PAGE)
    )
    rows = [Execution.from_row(r) for r in conn.execute(query)]
    return [r for r in rows if r.meta.get("file") == report.path][:limit]


# -- workflows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSummary:
    file_path: str
    loaded_at: str | None
    last_modified: str | None
    error: str
    phases: int
    phase_errors: int


def file_summaries(conn: Connection) -> list[FileSummary]:
    """Every workflow file with its phase count and how many phases have an error status."""
    p = workflow_phases.c
    per = (
        select(
            p.file_path,
            func.count().label("n"),
            func.sum(case((p.severity == "error", 1), else_=0)).label("bad"),
        )
        .group_by(p.file_path)
        .subquery()
    )
    f = workflow_files.c
    query = (
        select(f.file_path, f.loaded_at, f.last_modified, f.error, per.c.n, per.c.bad)
        .select_from(workflow_files.outerjoin(per, per.c.file_path == f.file_path))
        .order_by(f.file_path)
    )
    return [
        FileSummary(r[0], r[1], r[2], r[3] or "", int(r[4] or 0), int(r[5] or 0))
        for r in conn.execute(query)
    ]


def phase_state_of(conn: Connection, file_path: str, task: str) -> PhaseState | None:
    """One phase's scheduling state (``phase_state``), or None before the scheduler saw it."""
    s = phase_state.c
    row = conn.execute(select(phase_state).where(s.file_path == file_path, s.task == task)).first()
    if row is None:
        return None
    return PhaseState(
        row.file_path,
        row.task,
        from_iso(row.first_seen),
        from_iso(row.evaluated_until),
        row.cron,
        from_iso(row.next_fire) if row.next_fire else None,
        bool(row.paused),
    )


def paused_of(conn: Connection, file_path: str, task: str) -> bool:
    """Whether one phase's cron is paused."""
    s = phase_state.c
    query = select(s.paused).where(s.file_path == file_path, s.task == task)
    return bool(conn.scalar(query))


def paused_and_next(conn: Connection) -> dict[tuple[str, str], tuple[bool, datetime | None]]:
    """Per phase the scheduler planned: (paused, stored next fire)."""
    s = phase_state.c
    return {
        (r.file_path, r.task): (bool(r.paused), from_iso(r.next_fire) if r.next_fire else None)
        for r in conn.execute(select(s.file_path, s.task, s.paused, s.next_fire))
    }


# -- the database itself -------------------------------------------------------------------------


def table_rows(conn: Connection) -> dict[str, int]:
    """Rows per table of the schema (every table ``metadata`` knows, plus ``phase_stats``)."""
    counts = {}
    names = [*sorted(metadata.tables), "phase_stats"]
    for name in names:
        if conn.dialect.has_table(conn, name):
            counts[name] = int(conn.scalar(text(f'SELECT COUNT(*) FROM "{name}"')) or 0)
    return counts


def database_bytes(conn: Connection) -> int | None:
    """The database's size on disk, where the backend can tell (SQLite, PostgreSQL)."""
    if conn.dialect.name == "sqlite":
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
        size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
        return int(pages) * int(size)
    if conn.dialect.name == "postgresql":
        return int(conn.scalar(text("SELECT pg_database_size(current_database())")) or 0)
    return None


def window(now: datetime, days: int) -> tuple[datetime, datetime]:
    """[midnight UTC ``days - 1`` days before ``now``, next midnight): a calendar window."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days - 1), midnight + timedelta(days=1)


def files_with_task(conn: Connection, task: str) -> list[str]:
    """The workflow files that have a phase ``task`` (``ix_workflow_phases_task``)."""
    p = workflow_phases.c
    query = select(p.file_path).where(p.task == task).order_by(p.file_path)
    return [r[0] for r in conn.execute(query)]


# -- export --------------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "id",
    "task_id",
    "file_path",
    "task",
    "task_time",
    "attempt",
    "trigger",
    "status",
    "exit_code",
    "created_at",
    "started_at",
    "ended_at",
    "duration_seconds",
    "parent_execution_id",
    "info",
    "msg",
)


def export_row(execution: Execution) -> dict[str, object]:
    """One execution as a flat row of EXPORT_COLUMNS (ISO timestamps, plain values)."""
    data = execution.as_dict()
    started, ended = execution.started_at, execution.ended_at
    data["duration_seconds"] = (ended - started).total_seconds() if started and ended else None
    return {column: data[column] for column in EXPORT_COLUMNS}


@dataclass(frozen=True)
class PhaseLast:
    """A phase's newest execution and its stored next fire, from the ``phase_status`` view."""

    last_id: int | None
    last_status: str | None
    last_ended_at: str | None
    next_fire: str | None
    paused: bool


def last_of_file(conn: Connection, file_path: str) -> dict[str, PhaseLast]:
    """Per task of one workflow file: its newest execution and next fire."""
    rows = conn.execute(
        text(
            "SELECT task, last_execution_id, last_status, last_ended_at, next_fire, paused"
            " FROM phase_status WHERE file_path = :f"
        ),
        {"f": file_path},
    )
    return {r[0]: PhaseLast(r[1], r[2], r[3], r[4], bool(r[5])) for r in rows}


def all_tasks(conn: Connection, limit: int = 2000) -> list[tuple[str, str]]:
    """(file_path, task) of every phase, in order, at most ``limit`` (for pickers)."""
    p = workflow_phases.c
    query = select(p.file_path, p.task).order_by(p.file_path, p.task).limit(limit)
    return [(r[0], r[1]) for r in conn.execute(query)]


def phase_status_rows(
    conn: Connection, file_path: str | None = None, limit: int = 1000, offset: int = 0
) -> list[dict[str, object]]:
    """Rows of the ``phase_status`` view (definition, validation, paused, last run, next
    fire) by file and task; each phase's last run is one index seek."""
    where = " WHERE file_path = :f" if file_path else ""
    rows = conn.execute(
        text(
            f"SELECT * FROM phase_status{where} ORDER BY file_path, task"
            " LIMIT :limit OFFSET :offset"
        ),
        {"f": file_path, "limit": max(1, min(5000, limit)), "offset": max(0, offset)},
    )
    return [dict(r._mapping) for r in rows]


def last_success_by_phase(conn: Connection) -> dict[tuple[str, str], str]:
    """When each current phase last completed (the end of its newest complete execution):
    one seek per phase down ``ix_executions_phase_id``, never a scan of all executions."""
    rows = conn.execute(
        text(
            "SELECT p.file_path, p.task, (SELECT x.ended_at FROM executions x"
            " WHERE x.file_path = p.file_path AND x.task = p.task AND x.status = 'complete'"
            " ORDER BY x.id DESC LIMIT 1) AS ended FROM workflow_phases p"
        )
    )
    return {(r[0], r[1]): r[2] for r in rows if r[2]}
