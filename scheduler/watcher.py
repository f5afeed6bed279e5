"""A watched folder: which files arrived (and finished arriving) since the last scan.

Polling with ``os.scandir``, no dependency and no OS notification API: a scan of a few thousand
files costs a few milliseconds. A file is reported once its size and modification time have
stayed the same for one whole poll interval after it appeared or changed, so a file still being
written (or copied in) is not reported half-written. Names starting with ``.`` (files and
folders) are ignored: uploaders write such temporary names and rename them when done.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

Signature = tuple[int, int]  # (size, mtime in ns)


class FolderWatcher:
    """Reports files under ``root`` that appeared or changed, once they stopped changing.

    The first ``poll`` takes stock of the files already there and reports none of them, unless
    ``report_existing``: then they count as just appeared. A file removed and created again is
    new again. Not thread-safe; one caller polls.
    """

    def __init__(self, root: Path, *, report_existing: bool = False) -> None:
        self.root = root
        self._seen: dict[str, Signature] | None = {} if report_existing else None
        self._unsettled: set[str] = set()  # appeared or changed at the last poll
        self._missing_logged = False

    def poll(self) -> list[Path]:
        """Scan once; return (sorted) the files whose signature is unchanged since the last
        scan, where that last scan found them new or changed. Call every few seconds."""
        current = self._scan()
        if self._seen is None:
            self._seen = current
            return []
        ready: list[str] = []
        unsettled: set[str] = set()
        for path, signature in current.items():
            if self._seen.get(path) != signature:
                unsettled.add(path)
            elif path in self._unsettled:
                ready.append(path)
        self._seen, self._unsettled = current, unsettled
        return [Path(p) for p in sorted(ready)]

    def _scan(self) -> dict[str, Signature]:
        found: dict[str, Signature] = {}
        try:
            self._scan_into(str(self.root), found)
        except OSError as exc:  # the folder itself is missing or unreadable
            if not self._missing_logged:
                log.warning("cannot watch %s: %s", self.root, exc)
                self._missing_logged = True
            return found
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
