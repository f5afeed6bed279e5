"""The workflow catalog: files on disk kept in step with ``workflow_files``/``workflow_phases``.

This is flowlord's workflow cache in Python: ``refresh()`` reloads only files whose md5 changed,
adds new ones and deletes removed ones, and returns the changed keys (removed ones prefixed
``-``); ``search``, ``get`` and ``children`` answer from the store with flowlord's matching rules.
Each file's update is one transaction, so one broken or slow file never holds up the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from scheduler import graph
from scheduler.clock import Clock
from scheduler.errors import RuleError, WorkflowError
from scheduler.loader import FileLoad, WorkflowSource, md5_hex, parse_bytes, read_source
from scheduler.rules import parse_rule
from scheduler.store.db import Database
from scheduler.store.workflows import (
    FileRow,
    PhaseRow,
    file_rows,
    mark_broken,
    phase_rows,
    remove_file,
    replace_file,
)
from scheduler.validation import PhaseSpec, Severity, validate_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh changed: keys reloaded or added, keys removed, and files in error."""

    changed: tuple[str, ...]
    removed: tuple[str, ...]
    errors: tuple[tuple[str, str], ...]

    @property
    def keys(self) -> list[str]:
        """flowlord's return value: changed keys, then removed ones as ``-key``."""
        return list(self.changed) + ["-" + key for key in self.removed]


class Catalog:
    """Workflow files ↔ store. Owns no state of its own beyond where the files are."""

    def __init__(self, db: Database, workflows: Path, clock: Clock) -> None:
        self.db = db
        self.path = workflows
        self.clock = clock

    def is_dir(self) -> bool:
        return self.path.is_dir()

    def refresh(self) -> RefreshResult:
        """Bring the store in step with the files; raises WorkflowError if the path is gone."""
        if not self.path.exists():
            raise WorkflowError(str(self.path), "no such file or folder")
        present = WorkflowSource(self.path).files()
        with self.db.read() as conn:
            known = file_rows(conn)
        changed, errors = [], []
        for key, path in present.items():
            load = self._load_if_changed(key, path, known.get(key))
            if load is None:
                continue
            changed.append(key)
            if load.error:
                errors.append((key, load.error))
        removed = [key for key in known if key not in present]
        for key in removed:
            with self.db.write() as conn:
                remove_file(conn, key)
        if changed or removed:
            log.info("workflows refreshed: %s", ", ".join(changed + ["-" + k for k in removed]))
        return RefreshResult(tuple(changed), tuple(removed), tuple(errors))

    def _load_if_changed(self, key: str, path: Path, stored: FileRow | None) -> FileLoad | None:
        """Parse and store ``path`` unless its md5 matches ``stored``; the load, or None."""
        try:
            data, modified = read_source(path)
        except OSError as exc:
            load = FileLoad(key, "", None, error=f"cannot read: {exc.strerror or exc}")
            self._store(load)
            return load
        if stored is not None and stored.file_hash == md5_hex(data):
            return None
        load = parse_bytes(key, data, modified)
        self._store(load)
        return load

    def _store(self, load: FileLoad) -> None:
        now = self.clock.now()
        if load.error:
            log.warning("workflow %s: %s", load.file_path, load.error)
            with self.db.write() as conn:
                mark_broken(conn, load.file_path, load.file_hash, load.last_modified, load.error)
            return
        specs = validate_file(load.file_path, load.phases)
        rows = [_row(spec) for spec in specs]
        with self.db.write() as conn:
            replace_file(conn, load.file_path, load.file_hash, load.last_modified, rows, now)

    def phases(self) -> list[PhaseSpec]:
        """Every stored phase, by file then task."""
        with self.db.read() as conn:
            return [spec_from_row(row) for row in phase_rows(conn)]

    def search(self, topic: str, job: str = "") -> PhaseSpec | None:
        """The first phase (by file, task) of ``topic`` with ``job``; any job when job is ""."""
        for spec in self.phases():
            if spec.topic == topic and (not job or spec.job == job):
                return spec
        return None

    def get(self, task: str, file_path: str | None = None) -> PhaseSpec | None:
        """The phase whose task is exactly ``task`` (``topic`` or ``topic:job``)."""
        for spec in self.phases():
            if spec.task == task and file_path in (None, spec.file_path):
                return spec
        return None

    def children(self, file_path: str, task: str) -> list[PhaseSpec]:
        """Phases of ``file_path`` whose ``depends_on`` names ``task`` (by topic, or exactly)."""
        with self.db.read() as conn:
            specs = [spec_from_row(row) for row in phase_rows(conn, file_path)]
        return [spec for spec in specs if depends_on_matches(spec.depends_on, task)]

    def close(self) -> None:
        self.db.close()


def depends_on_matches(depends_on: str, parent_task: str) -> bool:
    """flowlord's rule: ``topic`` matches any job of the topic, ``topic:job`` only that job."""
    if not depends_on:
        return False
    if ":" in depends_on:
        return depends_on == parent_task
    return depends_on == graph.topic_of(parent_task)


def spec_from_row(row: PhaseRow) -> PhaseSpec:
    """A stored phase back as a spec; its rule is parsed again (None if it does not parse)."""
    try:
        rule = parse_rule(row.rule)
    except RuleError:
        rule = None
    return PhaseSpec(
        file_path=row.file_path,
        task=row.task,
        depends_on=row.depends_on,
        rule_text=row.rule,
        template=row.template,
        retry=row.retry,
        rule=rule,
        status=row.status,
        severity=Severity(row.severity),
    )


def _row(spec: PhaseSpec) -> PhaseRow:
    return PhaseRow(
        file_path=spec.file_path,
        task=spec.task,
        depends_on=spec.depends_on,
        rule=spec.rule_text,
        template=spec.template,
        retry=spec.retry,
        status=spec.status,
        severity=spec.severity.value,
    )
