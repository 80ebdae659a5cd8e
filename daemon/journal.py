"""Durable journal: an append-only SQLite database (WAL) of signals, decisions and commands.

One writer task owns the connection so the control loop never waits on the disk, except where it
must: an accepted grid event is committed before it is acknowledged (`durable`).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("mullet.journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    wall_s REAL NOT NULL,
    monotonic_s REAL NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_kind ON journal(kind, subject);
"""


@dataclass
class _Entry:
    wall_s: float
    monotonic_s: float
    kind: str
    subject: str | None
    data: str
    committed: asyncio.Future[None] | None = field(default=None)


class Journal:
    def __init__(self, path: str | Path, *, queue_size: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, which is what "journaled before acknowledged" promises.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        self.written = 0

    def record(self, kind: str, data: dict[str, Any], subject: str | None = None) -> None:
        """Queue an entry without waiting; a full queue drops it and counts the loss, never blocks."""
        try:
            self._queue.put_nowait(_entry(kind, subject, data))
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("journal queue full, entry dropped", kind=kind, dropped=self.dropped)

    async def durable(self, kind: str, data: dict[str, Any], subject: str | None = None) -> None:
        """Return only once the entry is committed to disk."""
        await self.durable_many([(kind, data, subject)])

    async def durable_many(self, items: list[tuple[str, dict[str, Any], str | None]]) -> None:
        """Commit several entries (normally in one transaction) and return once all are on disk."""
        loop = asyncio.get_running_loop()
        entries = [_entry(kind, subject, data) for kind, data, subject in items]
        for entry in entries:
            entry.committed = loop.create_future()
            await self._queue.put(entry)
        await asyncio.gather(*(entry.committed for entry in entries if entry.committed is not None))

    async def run(self) -> None:
        try:
            while True:
                batch = [await self._queue.get()]
                while not self._queue.empty() and len(batch) < 500:
                    batch.append(self._queue.get_nowait())
                await self._commit(batch)
        finally:
            await self.flush()

    async def flush(self) -> None:
        batch: list[_Entry] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._commit(batch)

    async def _commit(self, batch: list[_Entry]) -> None:
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception as exc:
            log.exception("journal write failed", entries=len(batch))
            for entry in batch:
                if entry.committed is not None and not entry.committed.done():
                    entry.committed.set_exception(exc)
            return
        self.written += len(batch)
        for entry in batch:
            if entry.committed is not None and not entry.committed.done():
                entry.committed.set_result(None)

    def _write(self, batch: list[_Entry]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, ?, ?, ?, ?)",
                [(e.wall_s, e.monotonic_s, e.kind, e.subject, e.data) for e in batch],
            )

    def entries(
        self, kind: str | tuple[str, ...] | None = None
    ) -> list[tuple[float, str, str | None, dict[str, Any]]]:
        """Read back (wall_s, kind, subject, data) in order, of one kind or several interleaved; for
        recovery at start-up and for tests."""
        query = "SELECT wall_s, kind, subject, data FROM journal"
        args: tuple[str, ...] = ()
        if kind is not None:
            args = (kind,) if isinstance(kind, str) else kind
            query += f" WHERE kind IN ({', '.join('?' * len(args))})"
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [(wall_s, k, subject, json.loads(data)) for wall_s, k, subject, data in rows]

    def max_seq(self) -> int:
        row = self._db.execute(
            "SELECT MAX(CAST(json_extract(data, '$.seq') AS INTEGER)) FROM journal"
            " WHERE kind IN ('setpoint', 'tenant_setpoint')"
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def last_setpoints(self) -> dict[str, dict[str, Any]]:
        """The newest journaled setpoint per group."""
        rows = self._db.execute(
            "SELECT subject, data FROM journal WHERE id IN"
            " (SELECT MAX(id) FROM journal WHERE kind = 'setpoint' GROUP BY subject)"
        ).fetchall()
        return {subject: json.loads(data) for subject, data in rows}

    def close(self) -> None:
        self._db.close()


def _entry(kind: str, subject: str | None, data: dict[str, Any]) -> _Entry:
    return _Entry(time.time(), time.monotonic(), kind, subject, json.dumps(data, separators=(",", ":")))
