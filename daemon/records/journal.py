"""Durable journal: an append-only SQLite database (WAL) of signals, decisions and commands.

One writer task owns the connection so the control loop never waits on the disk, except where it
must: an accepted grid event is committed before it is acknowledged (`durable`). The queue is bounded:
when it is full `record()` drops the entry and counts the loss (`on_drop`), it never blocks. The same
task deletes entries older than the retention, except those start-up recovery replays.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("mullet.journal")
_T = TypeVar("_T")

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
CREATE INDEX IF NOT EXISTS journal_wall ON journal(wall_s);
"""

# Kept whatever their age: start-up recovery replays them (accepted events and cancels, trips and
# their releases, escalations and outlet restores: a few rows per event; drills and their schedule),
# and reports read them.
RECOVERY_KINDS = (
    "grid_event",
    "trip",
    "trip_released",
    "escalation",
    "outlets_restored",
    "drill",
    "drill_scheduled",
    "drill_cancelled",
    "drill_missed",
)
# Rows deleted per transaction, so pruning a large backlog never holds the writer for long.
_PRUNE_BATCH = 5000
# A dropped entry is logged at most this often (the count is exact; the log says how many so far).
_DROP_LOG_EVERY_S = 1.0


class JournalError(Exception):
    """The journal cannot be opened, read or written at start-up: one line naming the path and what is
    wrong (`mulletd run` exits EXIT_JOURNAL with it, docs/operations.md)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"journal {path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass
class _Entry:
    wall_s: float
    monotonic_s: float
    kind: str
    subject: str | None
    data: str
    committed: asyncio.Future[None] | None = field(default=None)


class Journal:
    def __init__(
        self,
        path: str | Path,
        *,
        queue_size: int = 10_000,
        retention_s: float | None = None,
        prune_every_s: float = 3600.0,
        on_drop: Callable[[str], None] | None = None,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        """`retention_s`: delete entries older than this (None: keep everything). `on_drop(kind)` is
        called for every entry lost to a full queue, `on_commit(entries, seconds)` after every commit."""
        self.path = Path(path)
        self._db = _open(self.path)
        # No row at all: a new journal, or one lost (0 bytes, deleted); start-up then asks the broker
        # what the site was last told (daemon/site/recovery.py, broker_history).
        self.was_empty = self._read(lambda db: db.execute("SELECT 1 FROM journal LIMIT 1").fetchone()) is None
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(maxsize=queue_size)
        self.retention_s = retention_s
        self.prune_every_s = prune_every_s
        self._on_drop = on_drop
        self._on_commit = on_commit
        self.dropped = 0
        self.written = 0
        self.pruned = 0
        self._drop_logged_mono_s = -math.inf
        self._pruned_mono_s = -math.inf

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def record(self, kind: str, data: dict[str, Any], subject: str | None = None) -> None:
        """Queue an entry without waiting; a full queue drops it and counts the loss, never blocks."""
        try:
            self._queue.put_nowait(_entry(kind, subject, data))
        except asyncio.QueueFull:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(kind)
            now_s = time.monotonic()
            if now_s - self._drop_logged_mono_s >= _DROP_LOG_EVERY_S:
                self._drop_logged_mono_s = now_s
                log.error("journal queue full, entry dropped", kind=kind, dropped_total=self.dropped)

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
                await self._prune_if_due()
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can drop a cancellation (gh-86296).
                    async with asyncio.timeout(self.prune_every_s):
                        first = await self._queue.get()
                except TimeoutError:
                    continue
                batch = [first]
                while not self._queue.empty() and len(batch) < 500:
                    batch.append(self._queue.get_nowait())
                await self._commit(batch)
        finally:
            await self.flush()

    async def _prune_if_due(self) -> None:
        now_s = time.monotonic()
        if self.retention_s is None or now_s - self._pruned_mono_s < self.prune_every_s:
            return
        self._pruned_mono_s = now_s
        try:
            await self.prune(time.time() - self.retention_s)
        except Exception:  # pruning is housekeeping: a failure must not stop the writer
            log.exception("journal retention failed")

    async def prune(self, before_wall_s: float) -> int:
        """Delete entries older than `before_wall_s`, in short transactions, except the recovery kinds,
        each group's newest setpoint and the QSE link's newest levels; returns how many went."""
        deleted = 0
        while True:
            count = await _finish(asyncio.ensure_future(asyncio.to_thread(self._prune_batch, before_wall_s)))
            deleted += count
            if count < _PRUNE_BATCH:
                break
        self.pruned += deleted
        if deleted:
            log.info("journal retention", deleted=deleted, before_wall_s=round(before_wall_s, 3))
        return deleted

    def _prune_batch(self, before_wall_s: float) -> int:
        keep = ", ".join("?" * len(RECOVERY_KINDS))
        with self._db:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "DELETE FROM journal WHERE id IN (SELECT id FROM journal"
                f" WHERE wall_s < ? AND kind NOT IN ({keep})"
                " AND id NOT IN (SELECT MAX(id) FROM journal WHERE kind IN ('setpoint', 'qse_write')"
                " GROUP BY kind, subject)"
                f" ORDER BY id LIMIT {_PRUNE_BATCH})",
                (before_wall_s, *RECOVERY_KINDS),
            )
            return int(cursor.rowcount)

    async def flush(self) -> None:
        batch: list[_Entry] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._commit(batch)

    async def _commit(self, batch: list[_Entry]) -> None:
        started_s = time.perf_counter()
        writing = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
        try:
            await _finish(writing)
        except asyncio.CancelledError:
            # The write itself ran to its end: its waiters learn how it went.
            failure = writing.exception()
            if failure is None:
                self._settle(batch)
            else:
                self._fail(batch, failure)
            raise
        except Exception as exc:
            self._fail(batch, exc)
            return
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - started_s)
        self._settle(batch)

    def _settle(self, batch: list[_Entry]) -> None:
        self.written += len(batch)
        for entry in batch:
            if entry.committed is not None and not entry.committed.done():
                entry.committed.set_result(None)

    def _fail(self, batch: list[_Entry], exc: BaseException) -> None:
        log.error("journal write failed", entries=len(batch), error=repr(exc))
        for entry in batch:
            if entry.committed is not None and not entry.committed.done():
                entry.committed.set_exception(exc)

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
        rows = self._read(lambda db: db.execute(query + " ORDER BY id", args).fetchall())
        return [(wall_s, k, subject, json.loads(data)) for wall_s, k, subject, data in rows]

    def max_seq(self) -> int:
        row = self._read(
            lambda db: db.execute(
                "SELECT MAX(CAST(json_extract(data, '$.seq') AS INTEGER)) FROM journal"
                " WHERE kind IN ('setpoint', 'tenant_setpoint')"
            ).fetchone()
        )
        return int(row[0]) if row and row[0] is not None else 0

    def last(self, kind: str) -> tuple[float, str, str | None, dict[str, Any]] | None:
        """The newest entry of `kind` (wall_s, kind, subject, data), or None."""
        row = self._read(
            lambda db: db.execute(
                "SELECT wall_s, kind, subject, data FROM journal WHERE kind = ? ORDER BY id DESC LIMIT 1",
                (kind,),
            ).fetchone()
        )
        return None if row is None else (row[0], row[1], row[2], json.loads(row[3]))

    def last_setpoints(self) -> dict[str, dict[str, Any]]:
        """The newest journaled setpoint per group."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT subject, data FROM journal WHERE id IN"
                " (SELECT MAX(id) FROM journal WHERE kind = 'setpoint' GROUP BY subject)"
            ).fetchall()
        )
        return {subject: json.loads(data) for subject, data in rows}

    def _read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        """A read for recovery or a report: a damaged database is a JournalError, not a traceback."""
        try:
            return query(self._db)
        except sqlite3.DatabaseError as exc:
            raise JournalError(self.path, _explain(self.path, exc)) from None

    def close(self) -> None:
        self._db.close()


async def _finish(running: asyncio.Future[_T]) -> _T:
    """Await work on the connection in a worker thread. A cancelled caller still waits for the thread
    to finish: the thread cannot be stopped, and another use of the connection meanwhile (the shutdown
    flush) or `close()` during its transaction would race it (sqlite3 crashed a process that way in
    bench/journal_bench.py)."""
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait({running})
        raise


_SQLITE_HEADER = b"SQLite format 3\x00"


def write_rows(path: str | Path, rows: Iterable[tuple[float, str, str | None, dict[str, Any]]]) -> Path:
    """A journal at `path` (the daemon's schema) holding `rows` of (wall_s, kind, subject, data), in time
    order: how tests and benches build a recorded journal without running a daemon."""
    Journal(path).close()
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)",
            [(w, k, s, json.dumps(d)) for w, k, s, d in sorted(rows, key=lambda r: r[0])],
        )
    db.close()
    return Path(path)


def path_problem(path: str | Path) -> str | None:
    """Why the daemon could not open `path` as its journal, or None; creates and changes nothing
    (`mulletd check-config`). Checked as the user running it: under the unit's DynamicUser=, systemd
    makes the StateDirectory writable for the daemon."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory; journal.path must name a file"
    if path.exists():
        if not path.is_file():
            return f"{path} is not a regular file"
        if not os.access(path, os.R_OK | os.W_OK, effective_ids=True):
            return f"{path} is not readable and writable ({_access(path)})"
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
        if header and header != _SQLITE_HEADER:
            return f"{path} is not an SQLite database (corrupt, or another file)"
        if not os.access(path.parent, os.W_OK | os.X_OK, effective_ids=True):
            return f"{path}: {_access(path)} (SQLite writes its -wal and -shm files beside it)"
        return None
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{path} cannot be created: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK, effective_ids=True):
        mode = ancestor.stat().st_mode & 0o777
        return f"{path} cannot be created: {ancestor} (mode {mode:04o}) is not writable by uid {os.geteuid()}"
    return None


def open_read_only(path: str | Path) -> sqlite3.Connection:
    """An existing journal opened for reading only (`mulletd replay --journal`: on a copy, or beside a
    running daemon); a missing, empty, foreign or damaged file is a JournalError that says which."""
    path = Path(path)
    if not path.exists():
        raise JournalError(path, "no such file")
    if not path.is_file():
        raise JournalError(path, "is not a regular file")
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise JournalError(path, f"cannot be read: {exc.strerror}") from None
    if not header:
        raise JournalError(path, "is empty (0 bytes): no journal was written there")
    if header != _SQLITE_HEADER:
        raise JournalError(path, "not an SQLite database (corrupt, or another file)")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    try:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'").fetchone()
        if found is None:
            raise JournalError(path, "an SQLite database without a journal table (another program's file?)")
        db.execute("SELECT wall_s, monotonic_s, kind, subject, data FROM journal LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        db.close()
        raise JournalError(path, _explain(path, exc)) from None
    except JournalError:
        db.close()
        raise
    return db


def _open(path: Path) -> sqlite3.Connection:
    """Open (or create) the journal and prove it writable now, so a bad file or directory stops
    start-up with one clear line instead of failing the first grid event."""
    if path.is_dir():
        raise JournalError(path, "is a directory; journal.path must name a file")
    if path.exists() and not path.is_file():
        raise JournalError(path, "is not a regular file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise JournalError(path, f"cannot create its directory {path.parent}: a file is in the way") from None
    except OSError as exc:
        raise JournalError(path, f"cannot create its directory {path.parent}: {exc.strerror}") from None
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, which is what "journaled before acknowledged" promises.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        # A write, rolled back: a read-only file or directory fails here (SQLite opens those read-only).
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO journal (wall_s, monotonic_s, kind, data) VALUES (0, 0, 'probe', '{}')")
        db.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        raise JournalError(path, _explain(path, exc)) from None
    return db


def _explain(path: Path, exc: sqlite3.DatabaseError) -> str:
    """What is wrong, in an operator's words, from SQLite's error and the file's permissions."""
    message = str(exc)
    code = getattr(exc, "sqlite_errorname", "")
    if "not a database" in message or code == "SQLITE_NOTADB":
        return "not an SQLite database (corrupt, or another file); move it aside to start a new journal"
    if "malformed" in message or code.startswith("SQLITE_CORRUPT"):
        return f"corrupt SQLite database ({message}); move it aside to start a new journal"
    if code.startswith("SQLITE_READONLY") or "readonly" in message:
        return f"read-only ({_access(path)}); the daemon must be able to write the file and its directory"
    if code.startswith("SQLITE_CANTOPEN") or "unable to open" in message:
        return f"cannot be opened ({_access(path)})"
    return f"{message} ({code or type(exc).__name__})"


def _access(path: Path) -> str:
    """Which of the file and its directory this process may not read or write."""
    problems, uid = [], os.geteuid()
    if path.exists() and not os.access(path, os.R_OK | os.W_OK, effective_ids=True):
        mode = path.stat().st_mode & 0o777
        problems.append(f"file mode {mode:04o}, not readable and writable by uid {uid}")
    if not os.access(path.parent, os.W_OK | os.X_OK, effective_ids=True):
        mode = path.parent.stat().st_mode & 0o777
        problems.append(f"directory {path.parent} mode {mode:04o}, not writable by uid {uid}")
    return "; ".join(problems) or os.strerror(errno.EACCES)


def _entry(kind: str, subject: str | None, data: dict[str, Any]) -> _Entry:
    return _Entry(time.time(), time.monotonic(), kind, subject, json.dumps(data, separators=(",", ":")))
