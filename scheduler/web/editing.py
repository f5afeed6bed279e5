"""Editing workflow files from the browser: create a file, add or edit a phase through a form,
edit the whole text, duplicate a file, delete one after confirmation.

Every save goes through ``scheduler.editor`` (validated before writing, comments kept, atomic
under a lock); a refused edit shows the validation messages and leaves the disk unchanged.
After a save the catalog is refreshed, so the pages show the change at once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scheduler import editor
from scheduler.errors import ConcurrentEditError, WorkflowError
from scheduler.loader import md5_hex, parse_bytes
from scheduler.validation import Severity, validate_file
from scheduler.web.context import WebContext, ctx
from scheduler.web.paths import new_workflow_path, workflow_path
from scheduler.web.render import BadRequest, page, text_arg

_PHASE_FIELDS = ("task", "depends_on", "rule", "retry", "template")


def _file_url(key: str, note: str) -> str:
    return f"/workflows/{quote(key)}?" + urlencode({"done": note})


async def _form(request: Request) -> dict[str, str]:
    return {k: str(v) for k, v in (await request.form()).items()}


def _refresh(context: WebContext) -> None:
    context.catalog.refresh()


# -- whole text ----------------------------------------------------------------------------------


def text_edit(old: str, new: str, key: str) -> editor.Edit:
    """Replace the whole text, refused (WorkflowError listing every message) when the new text
    is not TOML or gives a phase an error it did not have."""
    editor.split_document(new, key)
    before = _errors(old, key)
    problems = [
        f"{task}: {message}"
        for task, messages in _errors(new, key).items()
        for message in messages
        if message not in before.get(task, [])
    ]
    if problems:
        raise WorkflowError(key, "refused: " + "; ".join(problems))
    return editor.Edit(new, "")


def _errors(text: str, key: str) -> dict[str, list[str]]:
    load = parse_bytes(key, text.encode("utf-8"))
    if load.error:
        raise WorkflowError(key, load.error)
    return {
        spec.task: spec.status.split("; ")
        for spec in validate_file(key, load.phases)
        if spec.severity is Severity.ERROR
    }


def save_text(context: WebContext, key: str, new: str, loaded_md5: str) -> None:
    """Write ``new`` as the file's text unless it changed on disk since ``loaded_md5``."""
    path = workflow_path(context.config.workflows, key)

    def change(old: str) -> editor.Edit:
        if loaded_md5 and md5_hex(old.encode("utf-8")) != loaded_md5:
            raise ConcurrentEditError(key, "changed on disk since you opened it: reload")
        return text_edit(old, new.replace("\r\n", "\n"), key)

    editor.edit_file(path, key, change)
    _refresh(context)


async def edit_text(request: Request) -> Response:
    context = ctx(request)
    if request.method == "GET":
        key = text_arg(request.query_params, "file") or ""
        path = workflow_path(context.config.workflows, key)
        source = path.read_text(encoding="utf-8")
        return page(
            request,
            "edit_text.html",
            key=key,
            source=source,
            md5=md5_hex(source.encode("utf-8")),
            problem=None,
        )
    form = await _form(request)
    key = form.get("file", "")
    try:
        await run_in_threadpool(save_text, context, key, form.get("text", ""), form.get("md5", ""))
    except WorkflowError as exc:
        return page(
            request,
            "edit_text.html",
            key=key,
            source=form.get("text", ""),
            md5=form.get("md5", ""),
            problem=str(exc),
            status=400,
        )
    return RedirectResponse(_file_url(key, "saved"), 303)


# -- one phase -----------------------------------------------------------------------------------


def phase_changes(form: Mapping[str, str], current: Mapping[str, object]) -> dict[str, object]:
    """The keys the form changes: a value that differs from ``current``; an emptied one is
    removed (None). ``retry`` must be a whole number."""
    changes: dict[str, object] = {}
    for name in _PHASE_FIELDS:
        value = form.get(name, "").strip()
        if name == "retry" and value:
            if not value.isdigit():
                raise BadRequest("retry: must be a whole number of at least 0")
            typed: object = int(value)
        else:
            typed = value
        old = current.get(name)
        if value == "" and old not in (None, ""):
            changes[name] = None
        elif value != "" and typed != old:
            changes[name] = typed
    if changes.get("task", "") is None:
        raise BadRequest("task: required")
    return changes


def _current(context: WebContext, key: str, task: str) -> dict[str, object]:
    path = workflow_path(context.config.workflows, key)
    document = editor.parse_document(path.read_text(encoding="utf-8"), key)
    entry = editor.find_phase(document, key, task)
    table = {editor.canonical_key(k) or k: v for k, v in entry.table.items()}
    table["task"] = entry.raw.task
    return table


def save_phase(context: WebContext, key: str, task: str, form: Mapping[str, str]) -> str:
    """Add (``task`` empty) or change the phase; returns the phase's task after the edit."""
    path = workflow_path(context.config.workflows, key)
    if not task:
        values = {k: v for k, v in phase_changes(form, {}).items() if v is not None}
        edit = editor.edit_file(
            path,
            key,
            lambda text: editor.add_phase(text, key, values),  # type: ignore[arg-type]
        )
    else:
        changes = phase_changes(form, _current(context, key, task))
        if not changes:
            return task
        edit = editor.edit_file(
            path,
            key,
            lambda text: editor.set_phase(text, key, task, changes),  # type: ignore[arg-type]
        )
    _refresh(context)
    return edit.task


async def edit_phase(request: Request) -> Response:
    context = ctx(request)
    if request.method == "GET":
        key = text_arg(request.query_params, "file") or ""
        task = text_arg(request.query_params, "task") or ""
        workflow_path(context.config.workflows, key)
        values = await run_in_threadpool(_current, context, key, task) if task else {}
        return page(request, "edit_phase.html", key=key, task=task, values=values, problem=None)
    form = await _form(request)
    key, task = form.get("file", ""), form.get("original", "")
    try:
        new_task = await run_in_threadpool(save_phase, context, key, task, form)
    except (WorkflowError, BadRequest) as exc:
        message = exc.message if isinstance(exc, BadRequest) else str(exc)
        return page(
            request, "edit_phase.html", key=key, task=task, values=form, problem=message, status=400
        )
    return RedirectResponse(_file_url(key, f"saved {new_task}"), 303)


# -- files ---------------------------------------------------------------------------------------


def create(context: WebContext, name: str, source: str | None) -> str:
    """A new workflow file ``name`` holding ``source`` (else the starter text); its key."""
    path, key = new_workflow_path(context.config.workflows, name)
    text = editor.new_workflow_text(key) if source is None else source
    if source is not None:
        text_edit("", text, key)  # a duplicate is validated like any other write
    editor.create_file(path, key, text)
    _refresh(context)
    return key


async def new_file(request: Request) -> Response:
    context = ctx(request)
    if request.method == "GET":
        return page(request, "edit_new.html", name="", source_key=None, problem=None)
    form = await _form(request)
    name = form.get("name", "").strip()
    source_key = form.get("source") or None
    try:
        if not name:
            raise BadRequest("name: required")
        source = None
        if source_key:
            source = workflow_path(context.config.workflows, source_key).read_text("utf-8")
        key = await run_in_threadpool(create, context, name, source)
    except (WorkflowError, BadRequest) as exc:
        message = exc.message if isinstance(exc, BadRequest) else str(exc)
        return page(
            request, "edit_new.html", name=name, source_key=source_key, problem=message, status=400
        )
    return RedirectResponse(_file_url(key, "created"), 303)


def duplicate(request: Request) -> Response:
    context = ctx(request)
    key = text_arg(request.query_params, "file") or ""
    workflow_path(context.config.workflows, key)
    suggestion = key.removesuffix(".toml") + "-copy"
    return page(request, "edit_new.html", name=suggestion, source_key=key, problem=None)


def remove(context: WebContext, key: str) -> None:
    path = workflow_path(context.config.workflows, key)
    if context.config.workflows.is_file():
        raise WorkflowError(key, "the only workflow file cannot be deleted here")
    os.unlink(path)
    _refresh(context)


async def delete(request: Request) -> Response:
    context = ctx(request)
    if request.method == "GET":
        key = text_arg(request.query_params, "file") or ""
        workflow_path(context.config.workflows, key)
        return page(request, "edit_delete.html", key=key, problem=None)
    form = await _form(request)
    key = form.get("file", "")
    if form.get("confirm", "") != key:
        return page(
            request,
            "edit_delete.html",
            key=key,
            status=400,
            problem="type the file's name exactly to confirm",
        )
    await run_in_threadpool(remove, context, key)
    return RedirectResponse("/workflows?" + urlencode({"done": f"deleted {key}"}), 303)


ROUTES = [
    Route("/edit/text", edit_text, methods=["GET", "POST"]),
    Route("/edit/phase", edit_phase, methods=["GET", "POST"]),
    Route("/edit/new", new_file, methods=["GET", "POST"]),
    Route("/edit/duplicate", duplicate),
    Route("/edit/delete", delete, methods=["GET", "POST"]),
]
