"""The agent's outgoing reports, kept in a local SQLite file until the server has them.

Every report (progress, log, output, result, event) is written here before it is sent and
deleted once the server acknowledges it, so a report survives a lost connection, a
stopped server and a restarted agent. Entries are JSON (never pickle) and are replayed in
the order they were written. Progress reports of one task attempt coalesce: only the
newest waits in the spool, because an older one says nothing the newer does not.

WAL with `synchronous=NORMAL` keeps every committed report across a killed agent; only a
power loss can take the last ones.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    task_id INTEGER,
    attempt INTEGER,
    coalesce_key TEXT
);
DROP INDEX IF EXISTS ix_reports_coalesce;
CREATE INDEX IF NOT EXISTS ix_reports_coalescing ON reports (coalesce_key)
    WHERE coalesce_key IS NOT NULL;
"""
# Partial: only progress reports coalesce, and every other report (a task's result, its
# logs) then costs no index write when it is spooled or removed. Spools written before
# had the full index, which is dropped.


#: Reports kept in memory as well, at most (beyond, while the server is away, they are
#: read back from the file).
FRESH_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """One report waiting for the server: a protocol method and its params."""

    id: int
    method: str
    params: dict[str, Any]
    task_id: int | None = None
    attempt: int | None = None

    @property
    def final(self) -> bool:
        """True for a task's outcome (complete, error or cancelled)."""
        return self.method == "task_status" and self.params.get("state") != "running"


class SpoolBusy(Exception):
    """Another agent process holds this spool."""


class ReportTooLarge(ValueError):
    """A report bigger than any message the server takes: it could never be delivered."""


class Spool:
    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = _lock(path.with_name(path.name + ".lock"))
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._count = int(self._db.execute("SELECT COUNT(*) FROM reports").fetchone()[0])
        #: Reports written by this process, by id (ascending): they are read back from
        #: here, not decoded again from the file. Those of an earlier process, up to
        #: `_before`, are read from the file.
        self._fresh: dict[int, Entry] = {}
        self._before = int(
            self._db.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()[0]
        )

    def __len__(self) -> int:
        return self._count

    def add(
        self,
        method: str,
        params: dict[str, Any],
        task_id: int | None = None,
        attempt: int | None = None,
        coalesce_key: str | None = None,
        max_bytes: int | None = None,
    ) -> Entry:
        """Writes a report; with `coalesce_key`, replaces the waiting one with that key.
        Raises `ReportTooLarge` for a report over `max_bytes` of JSON."""
        body = json.dumps(params, separators=(",", ":"), ensure_ascii=False)
        if max_bytes is not None and len(body.encode()) > max_bytes:
            raise ReportTooLarge(f"this {method} report is over {max_bytes} bytes of JSON")
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            gone: list[tuple[int]] = []
            if coalesce_key is not None:
                gone = self._db.execute(
                    "DELETE FROM reports WHERE coalesce_key = ? RETURNING id", (coalesce_key,)
                ).fetchall()
            cursor = self._db.execute(
                "INSERT INTO reports (method, params, task_id, attempt, coalesce_key) "
                "VALUES (?, ?, ?, ?, ?)",
                (method, body, task_id, attempt, coalesce_key),
            )
        for (old,) in gone:
            self._fresh.pop(old, None)
        self._count += 1 - len(gone)
        assert cursor.lastrowid is not None
        entry = Entry(cursor.lastrowid, method, params, task_id, attempt)
        if len(self._fresh) < FRESH_LIMIT:
            self._fresh[entry.id] = entry
        else:  # a long time offline: read what is waiting from the file, not from memory
            self._fresh.clear()
            self._before = entry.id
        return entry

    def pending(self, after: int = 0, limit: int = 100) -> list[Entry]:
        """Waiting reports with an id above `after`, oldest first."""
        if after >= self._before:  # all written by this process: no need to read them
            found = []
            for entry_id, entry in self._fresh.items():
                if entry_id > after:
                    found.append(entry)
                    if len(found) == limit:
                        break
            return found
        rows = self._db.execute(
            "SELECT id, method, params, task_id, attempt FROM reports WHERE id > ? "
            "ORDER BY id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [Entry(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    def remove(self, *entry_ids: int) -> None:
        """Forgets acknowledged (or refused for good) reports, in one transaction."""
        marks = ",".join("?" * len(entry_ids))
        deleted = self._db.execute(f"DELETE FROM reports WHERE id IN ({marks})", entry_ids)
        self._count -= deleted.rowcount
        for entry_id in entry_ids:
            self._fresh.pop(entry_id, None)

    def has_final(self, task_id: int, attempt: int) -> bool:
        """Whether the outcome of this attempt is waiting to be sent."""
        row = self._db.execute(
            "SELECT 1 FROM reports WHERE task_id = ? AND attempt = ? AND method = 'task_status' "
            "AND coalesce_key IS NULL LIMIT 1",
            (task_id, attempt),
        ).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()
        os.close(self._lock)


def _lock(path: Path) -> int:
    """One agent per spool: two would send each other's reports."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolBusy(f"another agent is using the spool {path.with_suffix('')}") from None
    return fd
