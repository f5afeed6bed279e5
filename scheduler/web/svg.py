"""Charts drawn on the server as inline SVG: no JavaScript, no library, bounded size.

Every text that reaches the SVG goes through ``escape``; every number is formatted here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import networkx as nx
from markupsafe import Markup, escape

STATUS_ORDER = ("complete", "warn", "error", "alert", "skipped", "cancelled", "running", "queued")


def _svg(
    width: float, height: float, body: str, label: str, css: str = "chart", sized: bool = False
) -> Markup:
    size = f'width="{width:.0f}" height="{height:.0f}" ' if sized else ""
    return Markup(
        f'<svg class="{css}" {size}viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'
    )


def histogram(hours: Sequence[tuple[str, Mapping[str, int]]], label: str) -> Markup:
    """Stacked bars, one per (label, counts by status), coloured by status (CSS classes)."""
    width, height, gap, axis = 24 * 20, 80, 2, 12
    bar = width / max(1, len(hours))
    top = max([sum(c.values()) for _, c in hours] + [1])
    parts = []
    for i, (name, counts) in enumerate(hours):
        y = float(height)
        for status in STATUS_ORDER:
            n = counts.get(status, 0)
            if not n:
                continue
            h = n / top * (height - 4)
            y -= h
            parts.append(
                f'<rect class="s-{status}" x="{i * bar + gap / 2:.1f}" y="{y:.1f}" '
                f'width="{bar - gap:.1f}" height="{h:.1f}"><title>{escape(name)}: '
                f"{n} {status}</title></rect>"
            )
    for i in range(0, len(hours), 6):
        parts.append(
            f'<text class="axis" x="{i * bar + 1:.1f}" y="{height + axis - 1}">'
            f"{escape(hours[i][0])}</text>"
        )
    return _svg(width, height + axis, "".join(parts), label)


def heatmap(days: Mapping[str, int], last: date, count: int = 90) -> Markup:
    """A calendar: one column per week, one cell per day (Monday on top), darker = more."""
    first = last - timedelta(days=count - 1)
    start = first - timedelta(days=first.weekday())
    top = max([*days.values(), 1])
    cell, parts = 12, []
    day = start
    while day <= last:
        if day >= first:
            n = days.get(day.isoformat(), 0)
            level = 0 if n == 0 else 1 + min(3, int(4 * n / (top + 1)))
            column, row = (day - start).days // 7, day.weekday()
            parts.append(
                f'<rect class="heat-{level}" x="{column * cell}" y="{row * cell}" '
                f'width="{cell - 2}" height="{cell - 2}" rx="2">'
                f"<title>{day.isoformat()}: {n} runs</title></rect>"
            )
        day += timedelta(days=1)
    weeks = (last - start).days // 7 + 1
    label = f"runs per day, last {count} days"
    return _svg(weeks * cell, 7 * cell, "".join(parts), label, "chart heat")


def trend(runs: Sequence[tuple[float | None, str, int]], label: str) -> Markup:
    """Bars of duration, oldest left: each run is (seconds or None, status, id)."""
    width, height = 400, 60
    bar = width / max(1, len(runs))
    top = max([s for s, _, _ in runs if s is not None] + [0.001])
    parts = []
    for i, (secs, status, run_id) in enumerate(runs):
        h = max(1.0, (secs or 0) / top * (height - 2))
        parts.append(
            f'<rect class="s-{escape(status)}" x="{i * bar:.1f}" y="{height - h:.1f}" '
            f'width="{max(1.0, bar - 1):.1f}" height="{h:.1f}"><title>#{run_id} {escape(status)}'
            f" {'-' if secs is None else f'{secs:.1f}s'}</title></rect>"
        )
    return _svg(width, height, "".join(parts), label)


@dataclass(frozen=True)
class Span:
    label: str
    status: str
    start: datetime | None
    end: datetime | None
    href: str


def gantt(spans: Sequence[Span], now: datetime) -> Markup:
    """One row per execution of a chain, placed on a shared time axis."""
    timed = [s for s in spans if s.start is not None]
    if not timed:
        return Markup("")
    low = min(s.start for s in timed if s.start)
    high = max((s.end or now) for s in timed)
    total = max((high - low).total_seconds(), 0.001)
    width, row, parts = 900, 18, []
    for i, span in enumerate(spans):
        if span.start is None:
            continue
        x = (span.start - low).total_seconds() / total * (width - 200) + 200
        w = max(2.0, ((span.end or now) - span.start).total_seconds() / total * (width - 200))
        parts.append(
            f'<a href="{escape(span.href)}"><text x="0" y="{i * row + 13}" class="glabel">'
            f"{escape(span.label[:32])}</text>"
            f'<rect class="s-{escape(span.status)}" x="{x:.1f}" y="{i * row + 3}" '
            f'width="{w:.1f}" height="{row - 6}"><title>{escape(span.label)} '
            f"{escape(span.status)}</title></rect></a>"
        )
    height = max(row, len(spans) * row)
    return _svg(width, height, "".join(parts), "the chain over time", "chart gantt")


def dag(graph: nx.DiGraph, status: Mapping[Any, str], href: Mapping[Any, str]) -> Markup:
    """The dependency graph in layers (a node's layer is its longest path from a root), drawn
    left to right. Linear in nodes and edges, so 600 phases draw as fast as 6."""
    if graph.number_of_nodes() == 0:
        return Markup("")
    layer = _layers(graph)
    columns: dict[int, list[Any]] = {}
    for node in sorted(graph.nodes, key=str):
        columns.setdefault(layer[node], []).append(node)
    box_w, box_h, gap_x, gap_y = 170, 26, 50, 10
    where = {
        node: (col * (box_w + gap_x), i * (box_h + gap_y))
        for col, nodes in columns.items()
        for i, node in enumerate(nodes)
    }
    parts = []
    for parent, child in graph.edges:
        (x1, y1), (x2, y2) = where[parent], where[child]
        parts.append(
            f'<path class="edge" d="M{x1 + box_w},{y1 + box_h / 2} '
            f"C{x1 + box_w + gap_x / 2},{y1 + box_h / 2} {x2 - gap_x / 2},{y2 + box_h / 2} "
            f'{x2},{y2 + box_h / 2}"/>'
        )
    for node, (x, y) in where.items():
        name = node[1] if isinstance(node, tuple) else str(node)
        text = name if len(name) <= 24 else name[:23] + "…"
        parts.append(
            f'<a href="{escape(href.get(node, "#"))}"><rect class="node s-'
            f'{escape(status.get(node, "none"))}" x="{x}" y="{y}" width="{box_w}" '
            f'height="{box_h}" rx="4"><title>{escape(name)}</title></rect>'
            f'<text x="{x + 6}" y="{y + 17}">{escape(text)}</text></a>'
        )
    width = (max(columns) + 1) * (box_w + gap_x)
    height = max(len(v) for v in columns.values()) * (box_h + gap_y)
    # Drawn at its own size inside a scrolling box: scaled to the page, a wide graph's labels
    # would shrink out of reading.
    return _svg(width, height, "".join(parts), "dependency graph", "chart graph", sized=True)


def _layers(graph: nx.DiGraph) -> dict[Any, int]:
    """Longest-path layer per node; nodes on a cycle (never fired) stay in layer 0."""
    layer = {node: 0 for node in graph.nodes}
    try:
        order = list(nx.topological_sort(graph))
    except nx.NetworkXUnfeasible:
        return layer
    for node in order:
        for child in graph.successors(node):
            layer[child] = max(layer[child], layer[node] + 1)
    return layer
