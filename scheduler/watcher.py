"""A watched folder: which files arrived (and finished arriving) since the last scan.

Polling with ``os.scandir``, no dependency and no OS notification API: a scan of a few thousand
files costs a few milliseconds. A file is reported once its size and modification time have
stayed the same for one whole poll interval after it appeared or changed, so a file still being
written (or copied in) is not reported half-written. Names starting with ``.`` (files and
folders) are ignored: uploaders write such temporary names and rename them when done. A root
that can't be listed (a network mount gone) changes nothing: its files are not taken as removed,
so they are not reported again when it comes back.

The watcher only says what changed; it never touches the database. A caller that must survive
a restart seeds it with the state it kept (``WatchState``) and keeps each poll's ``Diff`` next
to what it does with the files reported (the engine: ``store/watched.py``, in the tick's
transaction).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

Signature = tuple[int, int]  # (size, mtime in ns)


class Entry(NamedTuple):
    """One file as of the last poll: its signature, and whether it is still settling (it
    appeared or changed at that poll, so the next poll reports it if it stayed the same)."""

    signature: Signature
    settling: bool


@dataclass(frozen=True)
class WatchState:
    """Everything a watcher knows between polls; enough to continue where another process
    (or an earlier run of this one) stopped."""

    files: Mapping[str, Signature]
    settling: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Diff:
    """How one poll changed the state: ``changed`` files (new, rewritten, or settled since
    the last poll) with their new entries, and ``removed`` ones. ``first`` when the poll took
    stock, the watcher having had no state before it. Empty when the state is unchanged."""

    changed: Mapping[str, Entry] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    first: bool = False

    def __bool__(self) -> bool:
        return self.first or bool(self.changed) or bool(self.removed)


@dataclass(frozen=True)
class Poll:
    """One poll's result: the files to report, how the state changed, and the state after."""

    ready: list[Path]
    diff: Diff
    state: WatchState


class FolderWatcher:
    """Reports files under ``root`` that appeared or changed, once they stopped changing.

    Without a ``state``, the first poll takes stock of the files already there and reports
    none of them, unless ``report_existing``: then they count as just appeared. With one (a
    previous run's, kept by the caller), polling continues from it: files that appeared or
    changed since are reported once settled, the others are not reported again. A file
    removed and created again is new again. Not thread-safe; one caller polls.
    """

    def __init__(
        self, root: Path, *, report_existing: bool = False, state: WatchState | None = None
    ) -> None:
        self.root = root
        self._report_existing = report_existing
        self._state = state
        self._missing_logged = False

    def poll(self) -> list[Path]:
        """Scan once; return (sorted) the files whose signature is unchanged since the last
        scan, where that last scan found them new or changed. Call every few seconds."""
        result = self.check()
        self.advance(result)
        return result.ready

    def check(self) -> Poll:
        """Scan once and say what ``poll`` would report and change, without changing anything:
        a caller that must first store the diff calls ``advance`` once that succeeded."""
        current = self._scan()
        if current is None:
            if self._state is not None:  # the root can't be listed (a mount gone?): not empty
                return Poll([], Diff(), self._state)
            current = {}  # missing from the start: what appears in it later is new
        if self._state is None and not self._report_existing:
            stock = {path: Entry(signature, False) for path, signature in current.items()}
            return Poll([], Diff(stock, first=True), WatchState(current))
        before = self._state or WatchState({})
        ready: list[str] = []
        changed: dict[str, Entry] = {}
        for path, signature in current.items():
            if before.files.get(path) != signature:
                changed[path] = Entry(signature, True)
            elif path in before.settling:
                ready.append(path)
                changed[path] = Entry(signature, False)
        removed = frozenset(path for path in before.files if path not in current)
        settling = frozenset(path for path, entry in changed.items() if entry.settling)
        diff = Diff(changed, removed, first=self._state is None)
        return Poll([Path(p) for p in sorted(ready)], diff, WatchState(current, settling))

    def advance(self, result: Poll) -> None:
        """Take the state ``result`` (from ``check``) leads to; an empty diff changes nothing."""
        if result.diff:
            self._state = result.state

    def _scan(self) -> dict[str, Signature] | None:
        """Every file under the root, or None when the root itself can't be listed."""
        found: dict[str, Signature] = {}
        try:
            self._scan_into(str(self.root), found)
        except OSError as exc:  # the folder itself is missing or unreadable
            if not self._missing_logged:
                log.warning("cannot watch %s: %s", self.root, exc)
                self._missing_logged = True
            return None
        self._missing_logged = False
        return found

    def _scan_into(self, folder: str, found: dict[str, Signature]) -> None:
        """Add the files under ``folder``; raises OSError only when ``folder`` can't be listed."""
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        self._scan_into(entry.path, found)
                    elif entry.is_file():
                        stat = entry.stat()
                        found[entry.path] = (stat.st_size, stat.st_mtime_ns)
                except OSError:  # vanished or unreadable since listed: its turn comes later
                    continue
