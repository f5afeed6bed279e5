"""Which file on disk a workflow file key names, for the pages that read or write one.

Only a ``.toml`` file inside the workflow folder (or the single workflow file) is ever opened:
a key is a relative path without ``.``/``..`` or hidden parts (``editor.new_file_path``), so a
request can never reach another file on the machine.
"""

from __future__ import annotations

from pathlib import Path

from scheduler import editor
from scheduler.errors import WorkflowError


def workflow_path(workflows: Path, key: str) -> Path:
    """The existing workflow file ``key``; raises WorkflowError when there is none."""
    if workflows.is_file():
        if key == workflows.name:
            return workflows
        raise WorkflowError(key, "no such workflow file")
    path, _ = editor.new_file_path(workflows, key)
    if not key.endswith(".toml") or not path.is_file():
        raise WorkflowError(key, "no such workflow file")
    return path


def new_workflow_path(workflows: Path, name: str) -> tuple[Path, str]:
    """Where a new workflow file ``name`` goes, and its key (``editor.new_file_path``)."""
    return editor.new_file_path(editor.workflow_folder(workflows), name)
