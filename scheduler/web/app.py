"""The ASGI application: routes by page, static files, security, and error answers.

``create_app`` builds everything from a Config; ``tomlflow web`` serves it on uvicorn and the
tests drive it with Starlette's TestClient. The app needs no running scheduler: it reads the
database, and actions queue rows as the command line does.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from scheduler.catalog import Catalog
from scheduler.clock import Clock, SystemClock
from scheduler.config import Config
from scheduler.errors import TaskNotFound, TomlflowError
from scheduler.store.db import Database
from scheduler.web import api, editing, metrics, ops, overview, phases, runs, workflows
from scheduler.web.context import WebContext
from scheduler.web.render import STATIC, BadRequest, error_page
from scheduler.web.security import Guard, SecurityMiddleware

log = logging.getLogger(__name__)


def create_app(config: Config, clock: Clock | None = None, *, warm: bool = False) -> Starlette:
    """The dashboard for ``config``'s database and workflows. Opens (and migrates) the
    database and loads the workflow files once, as every command does. With ``warm``, the
    overview's 90-day heat-map is read on a background thread at once (``tomlflow web``)."""
    clock = clock or SystemClock()
    db = Database(config.database)
    catalog = Catalog(db, config.workflows, clock, config.workers)
    try:
        catalog.refresh()
    except TomlflowError as exc:  # an unreadable folder: the pages say so, the app still runs
        log.warning("refresh failed: %s", exc)
    context = WebContext(config, db, catalog, clock, Guard.of(config.web.token), clock.now())
    routes: list[BaseRoute] = [
        *overview.ROUTES,
        *runs.ROUTES,
        *phases.ROUTES,
        *workflows.ROUTES,
        *ops.ROUTES,
        *editing.ROUTES,
        *api.ROUTES,
        *metrics.ROUTES,
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityMiddleware, guard=context.guard)],
        exception_handlers={
            BadRequest: _bad_request,
            TaskNotFound: _not_found,
            TomlflowError: _conflict,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.ctx = context
    if warm:
        context.heat.refresh_later(db, clock.now())
    return app


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return error_page(request, exc.message, exc.status)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, str(exc), 404)


async def _conflict(request: Request, exc: Exception) -> Response:
    """A refused action (a rerun while one is active, an invalid edit) or bad input."""
    return error_page(request, str(exc), 409 if request.method == "POST" else 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else f"not found: {request.url.path}"
    return error_page(request, message, exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_page(request, "internal error (logged on the server)", 500)
