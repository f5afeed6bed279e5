"""``/workflows``: the files with phase counts, errors and last change; ``/workflows/{file}``:
its TOML source, its phases with status, rule, next fire and last result, the dependency
graph (server-side SVG) and a grid of recent runs by phase."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scheduler import graph
from scheduler.errors import WorkflowError
from scheduler.store import browse
from scheduler.store.workflows import phase_rows
from scheduler.web import svg
from scheduler.web.context import ctx
from scheduler.web.paths import workflow_path
from scheduler.web.render import BadRequest, page, text_arg

GRID_TIMES = 15
GRID_PHASES = 100
_SORTS = {
    "name": lambda f: f.file_path,
    "phases": lambda f: -f.phases,
    "errors": lambda f: -(f.phase_errors + (1 if f.error else 0)),
    "changed": lambda f: f.last_modified or "",
}


def workflow_list(request: Request) -> Response:
    context = ctx(request)
    q = (text_arg(request.query_params, "q", 200) or "").lower()
    sort = request.query_params.get("sort", "name")
    if sort not in _SORTS:
        raise BadRequest(f"sort: use one of {', '.join(_SORTS)}")
    with context.db.read() as conn:
        files = [f for f in browse.file_summaries(conn) if q in f.file_path.lower()]
    files.sort(key=_SORTS[sort], reverse=sort == "changed")
    return page(request, "workflows.html", files=files, q=q, sort=sort)


@dataclass(frozen=True)
class Grid:
    """Recent runs by phases: ``times`` are task-time columns, newest first; ``cells`` maps
    (task, time) to the newest execution of that phase at that task time."""

    times: list[str]
    tasks: list[str]
    cells: dict[tuple[str, str], browse.Cell]


def run_grid(runs: Sequence[browse.Cell], order: Sequence[str]) -> Grid:
    cells: dict[tuple[str, str], browse.Cell] = {}
    for e in runs:  # newest first: the first seen per cell is the newest attempt
        cells.setdefault((e.task, e.task_time[:16] if e.task_time else "-"), e)
    # The newest task times, newest first; runs without a task time last.
    times = sorted({t for _, t in cells}, key=lambda t: (t != "-", t), reverse=True)
    times = times[:GRID_TIMES]
    cells = {key: cell for key, cell in cells.items() if key[1] in times}
    seen = {task for task, _ in cells}
    tasks = [t for t in order if t in seen][:GRID_PHASES]
    return Grid(times, tasks, cells)


_TOKENS = re.compile(
    r"(?P<c>#.*$)|(?P<h>^\s*\[\[?[^\]]*\]\]?)|(?P<s>\"(?:[^\"\\]|\\.)*\"|'[^']*')"
    r"|(?P<k>^\s*[A-Za-z0-9_\-\"'.]+(?=\s*=))",
    re.MULTILINE,
)


def highlight(source: str) -> Markup:
    """TOML with comments, headers, keys and strings wrapped in spans (everything escaped)."""
    out, at = [], 0
    for match in _TOKENS.finditer(source):
        out.append(str(escape(source[at : match.start()])))
        kind = match.lastgroup or ""
        out.append(f'<span class="{kind}">{escape(match.group())}</span>')
        at = match.end()
    out.append(str(escape(source[at:])))
    return Markup("".join(out))


def workflow_detail(request: Request) -> Response:
    context = ctx(request)
    key = request.path_params["file"]
    with context.db.read() as conn:
        summary = next((f for f in browse.file_summaries(conn) if f.file_path == key), None)
        if summary is None:
            raise BadRequest(f"no workflow file {key!r}", 404)
        specs = [context.spec(r) for r in phase_rows(conn, key)]
        last = browse.last_of_file(conn, key)
        cells = browse.newest_cells(conn, key, [s.task for s in specs][:GRID_PHASES], GRID_TIMES)
    source = _source(context.config.workflows, key)
    dependency = graph.build(specs)
    status = {
        (key, s.task): (last[s.task].last_status or "none") if s.task in last else "none"
        for s in specs
    }
    href = {(key, s.task): f"/phases/{s.task}?file={key}" for s in specs}
    return page(
        request,
        "workflow.html",
        file=summary,
        specs=specs,
        last=last,
        source=highlight(source) if source is not None else None,
        graph=svg.dag(dependency, status, href),
        grid=run_grid(cells, [s.task for s in specs]),
    )


def _source(workflows: Path, key: str) -> str | None:
    try:
        return workflow_path(workflows, key).read_text(encoding="utf-8", errors="replace")
    except (OSError, WorkflowError):
        return None


ROUTES = [
    Route("/workflows", workflow_list),
    Route("/workflows/{file:path}", workflow_detail),
]
