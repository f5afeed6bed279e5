"""Rendering: the Jinja2 environment (autoescape on), its filters, and request parsing helpers
that turn bad input into a 400 with one clear line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from scheduler.tasktime import from_iso, parse_at

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


class BadRequest(Exception):
    """Bad input from the request: answered 400 (or ``status``) with ``message``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _as_time(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return from_iso(value)
        except ValueError:
            return None
    return value


def when(value: datetime | str | None) -> str:
    """``2024-01-02 13:00:00`` (UTC), or ``-``."""
    moment = _as_time(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def seconds(value: float | None) -> str:
    """A duration for people: ``850ms``, ``12.5s``, ``3m 05s``, ``2h 03m``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def ago(value: datetime | str | None, now: datetime) -> str:
    moment = _as_time(value)
    if moment is None:
        return "-"
    delta = (now - moment).total_seconds()
    text = seconds(abs(delta))
    return f"{text} ago" if delta >= 0 else f"in {text}"


def duration(start: datetime | None, end: datetime | None, now: datetime) -> float | None:
    if start is None:
        return None
    return ((end or now) - start).total_seconds()


def tomlflow_version() -> str:
    try:
        return version("tomlflow")
    except PackageNotFoundError:
        return "unknown"


def make_env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "svg", "xml"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, seconds=seconds, tojson_pretty=_pretty)
    env.globals.update(urlencode=urlencode, version=tomlflow_version())
    return env


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


_ENV = make_env()


def page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """Render ``template`` with ``values`` plus what every page shows; times are relative to
    the app's clock."""
    context = getattr(request.app.state, "ctx", None)
    now = context.clock.now() if context is not None else datetime.now(UTC)
    html = _ENV.get_template(template).render(
        request=request,
        here=request.url.path,
        csrf=request.scope.get("state", {}).get("csrf", ""),
        now=now,
        ago=lambda v: ago(v, now),
        duration=lambda s, e: duration(s, e, now),
        **values,
    )
    return HTMLResponse(html, status_code=status)


def json_error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def error_page(request: Request, message: str, status: int) -> Response:
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return json_error(message, status)
    return page(request, "error.html", status=status, message=message, code=status)


# -- query-string parsing ------------------------------------------------------------------------


def text_arg(params: Mapping[str, str], name: str, limit: int = 1000) -> str | None:
    value = params.get(name, "").strip()
    if len(value) > limit:
        raise BadRequest(f"{name}: longer than {limit} characters")
    return value or None


def int_arg(
    params: Mapping[str, str],
    name: str,
    default: int | None = None,
    low: int = 0,
    high: int = 10**12,
) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}")
    return value


def after_arg(params: Mapping[str, str]) -> int:
    """``after``: a log sequence number (-1, the default, means from the start)."""
    value = int_arg(params, "after", -1, -1)
    return -1 if value is None else value


def time_arg(params: Mapping[str, str], name: str) -> datetime | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse_at(raw)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None
