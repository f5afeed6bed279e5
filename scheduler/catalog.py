"""The workflow catalog: files on disk kept in step with ``workflow_files``/``workflow_phases``.

This is flowlord's workflow cache in Python: ``refresh()`` reloads only files whose md5 changed,
adds new ones and deletes removed ones, and returns the changed keys (removed ones prefixed
``-``); ``search``, ``get`` and ``children`` answer from the store with flowlord's matching rules.
A file that does not parse is recorded as broken (keeping its last good phases) and never stops
the others; a file's row and its phases always commit in the same transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scheduler import graph
from scheduler.clock import Clock
from scheduler.config import WorkerConfig
from scheduler.errors import RuleError, WorkflowError
from scheduler.loader import (
    FileLoad,
    Found,
    SourceFile,
    WorkflowSource,
    md5_hex,
    parse_bytes,
    read_source,
)
from scheduler.rules import parse_rule
from scheduler.store.db import Database
from scheduler.store.workflows import (
    FileStat,
    LoadedFile,
    PhaseRow,
    StatRow,
    StatsCache,
    StoredStat,
    mark_broken,
    phase_rows,
    record_stats,
    remove_file,
    store_files,
    stored_stats,
)
from scheduler.validation import PhaseSpec, Severity, StoredPhase, require_command, validate_rows

log = logging.getLogger(__name__)

# Files written per transaction: one commit per file would dominate a cold load.
FILES_PER_TRANSACTION = 100


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


@dataclass(frozen=True)
class _Update:
    """One changed file, parsed and validated, ready to write."""

    load: FileLoad
    rows: Sequence[StoredPhase]
    known: bool  # the store has a row for this file already
    stat: FileStat  # what stat said before the file was read


class Catalog:
    """Workflow files ↔ store. Owns no state of its own beyond where the files are."""

    def __init__(
        self,
        db: Database,
        workflows: Path,
        clock: Clock,
        workers: Mapping[str, WorkerConfig] | None = None,
    ) -> None:
        """``workers``: the configuration's, so that a phase with neither template nor worker
        command reads as an error; it is checked when phases are read, not stored, so that
        it follows edits of the configuration (None: not checked)."""
        self.db = db
        self.path = workflows
        self.clock = clock
        self.workers = workers
        # workflow_files' stats, kept between refreshes while no one writes the table
        self._stats = StatsCache()

    def is_dir(self) -> bool:
        return self.path.is_dir()

    def refresh(self) -> RefreshResult:
        """Bring the store in step with the files; raises WorkflowError if the path is gone.

        Stat first: a file whose size and modification time match what the store remembers is
        not read. One whose stat changed is read and hashed, and reloaded only if its md5 did.
        Changed files are read, parsed and written FILES_PER_TRANSACTION at a time, so only
        one batch of parsed phases is ever held in memory.
        """
        if not self.path.exists():
            raise WorkflowError(str(self.path), "no such file or folder")
        present, too_long = self._present()
        with self.db.read() as conn:
            known = self._stats.read(conn)
            keys = _stale_keys(present, known)
            stored = stored_stats(conn, [key for key in keys if key in known])
        scanned_ns = time.time_ns()
        stale = [(SourceFile(key, *present[key]), stored.get(key)) for key in keys]
        restat: dict[str, FileStat] = {}
        changed, errors = self._load(stale, scanned_ns, restat)
        removed = _removed(known, present, keys)
        self._forget(removed, restat)
        errors += [(key, TOO_LONG) for key in too_long]
        if changed or removed:
            log.info("workflows refreshed: %s", ", ".join(changed + ["-" + k for k in removed]))
        return RefreshResult(tuple(changed), tuple(removed), tuple(errors))

    def _present(self) -> tuple[dict[str, Found], list[str]]:
        """The workflow files now present, by key, and the keys too long to store: those are
        left out (and logged), so that they cannot stop the others."""
        present = WorkflowSource(self.path).stat_all()
        too_long = [key for key in present if len(key) > MAX_KEY] if _any_too_long(present) else []
        for key in too_long:
            del present[key]
            log.error("workflow %s: %s", key, TOO_LONG)
        return present, too_long

    def _load(
        self,
        stale: list[tuple[SourceFile, StoredStat | None]],
        scanned_ns: int,
        restat: dict[str, FileStat],
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """Read, parse and store ``stale`` FILES_PER_TRANSACTION files at a time; the keys
        reloaded and the files in error."""
        changed: list[str] = []
        errors: list[tuple[str, str]] = []
        now = self.clock.now()
        for start in range(0, len(stale), FILES_PER_TRANSACTION):
            batch = stale[start : start + FILES_PER_TRANSACTION]
            updates = self._read_batch(batch, scanned_ns, restat)
            self._store(updates, now)
            changed += [update.load.file_path for update in updates]
            errors += [(u.load.file_path, u.load.error) for u in updates if u.load.error]
        return changed, errors

    def _read_batch(
        self,
        batch: list[tuple[SourceFile, StoredStat | None]],
        scanned_ns: int,
        restat: dict[str, FileStat],
    ) -> list[_Update]:
        """The updates of the files in ``batch`` whose content changed; a file read again
        unchanged only has its new stat put in ``restat``."""
        updates = []
        for found, stored in batch:
            stat = _trusted_stat(found, scanned_ns)
            update = self._read_if_changed(found, stored, stat)
            if update is not None:
                updates.append(update)
            elif stored is not None and (stored.size, stored.mtime_ns) != (
                stat.size,
                stat.mtime_ns,
            ):
                restat[found.key] = stat
        return updates

    def _read_if_changed(
        self, found: SourceFile, stored: StoredStat | None, stat: FileStat
    ) -> _Update | None:
        """Read, parse and validate ``found`` unless its md5 matches ``stored``; else None."""
        key = found.key
        try:
            data, modified = read_source(found.path)
        except OSError as exc:
            load = FileLoad(key, "", None, error=f"cannot read: {exc.strerror or exc}")
            if stored is not None and (stored.file_hash, stored.error) == ("", load.error):
                return None  # still unreadable the same way: nothing changed
            return _Update(load, (), stored is not None, stat)
        if stored is not None and stored.file_hash == md5_hex(data):
            return None
        load = parse_bytes(key, data, modified)
        if load.error:
            return _Update(load, (), stored is not None, stat)
        rows = validate_rows(load.file_path, load.phases)
        return _Update(load, rows, stored is not None, stat)

    def _store(self, updates: list[_Update], now: datetime) -> None:
        """Store one batch of updates in one transaction.

        A file's row and phases always commit together (never split over two transactions);
        batching files only saves a commit per file, which dominates a cold load.
        """
        if not updates:
            return
        with self.db.write() as conn:
            for update in updates:
                load = update.load
                if load.error:
                    log.warning("workflow %s: %s", load.file_path, load.error)
                    mark_broken(
                        conn,
                        load.file_path,
                        load.file_hash,
                        load.last_modified,
                        load.error,
                        update.stat,
                    )
            loaded = [_loaded(update) for update in updates if not update.load.error]
            if loaded:
                store_files(conn, loaded, now)

    def _forget(self, removed: list[str], restat: dict[str, FileStat]) -> None:
        """Delete the rows of removed files; store the new stat of files read again unchanged."""
        if removed or restat:
            with self.db.write() as conn:
                for key in removed:
                    remove_file(conn, key)
                record_stats(conn, restat)

    def phases(self) -> list[PhaseSpec]:
        """Every stored phase, by file then task."""
        with self.db.read() as conn:
            return [self._spec(row) for row in phase_rows(conn)]

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
            specs = [self._spec(row) for row in phase_rows(conn, file_path)]
        return [spec for spec in specs if depends_on_matches(spec.depends_on, task)]

    def close(self) -> None:
        self.db.close()

    def _spec(self, row: PhaseRow) -> PhaseSpec:
        spec = spec_from_row(row)
        return spec if self.workers is None else require_command(spec, self.workers)


# The width of workflow_files.file_path: a longer key (folders nested very deep) is reported as
# an error of its own and never stored.
MAX_KEY = 1024
TOO_LONG = f"file path longer than {MAX_KEY} characters below the workflow folder: not loaded"

# A file modified this close to the scan may change again within the same timestamp tick
# unseen (git's "racily clean" case): its stat is not trusted, so the next refresh reads it.
RACY_NS = 2_000_000_000


def _any_too_long(keys: dict[str, Found]) -> bool:
    """True when a key is longer than MAX_KEY (checked in C: one refresh visits every key)."""
    return max(map(len, keys), default=0) > MAX_KEY


def _stale_keys(present: dict[str, Found], known: dict[str, StatRow]) -> list[str]:
    """The keys of files whose stat is not the one stored (new files too), in key order."""
    # A stored mtime of None (racy) equals no file's, and a size of -1 (stat failed) is never
    # stored with an mtime: either way the file is read.
    return sorted(
        key
        for key, (_, size, mtime_ns) in present.items()
        if known.get(key) != (key, size, mtime_ns)
    )


def _removed(known: dict[str, StatRow], present: dict[str, Found], stale: list[str]) -> list[str]:
    """The stored keys no longer present, in key order. Counted first: with no file new or
    gone, as in most refreshes, no set of every key is built."""
    new = sum(1 for key in stale if key not in known)
    if len(known) == len(present) - new:
        return []
    return sorted(known.keys() - present.keys())


def _trusted_stat(found: SourceFile, scanned_ns: int) -> FileStat:
    racy = found.size < 0 or scanned_ns - found.mtime_ns < RACY_NS
    return FileStat(found.size, None if racy else found.mtime_ns)


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


def _loaded(update: _Update) -> LoadedFile:
    load = update.load
    return LoadedFile(
        load.file_path, load.file_hash, load.last_modified, update.rows, update.known, update.stat
    )
