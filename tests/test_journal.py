"""Journal: a full queue drops and counts (never blocks, never silent); retention deletes old entries
but keeps what start-up recovery replays."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from structlog.testing import capture_logs

from mullet.daemon.records.journal import RECOVERY_KINDS, Journal


async def test_full_queue_drops_counts_and_logs_without_blocking(tmp_path: Path) -> None:
    dropped: list[str] = []
    journal = Journal(tmp_path / "j.sqlite", queue_size=2, on_drop=dropped.append)
    with capture_logs() as logs:
        for n in range(5):  # no writer running: the queue fills after two
            journal.record("plan" if n % 2 else "setpoint", {"n": n})
    assert journal.dropped == 3 and dropped == ["setpoint", "plan", "setpoint"]
    # Logged, at most once a second, with the running count.
    assert [(e["event"], e["dropped_total"]) for e in logs] == [("journal queue full, entry dropped", 1)]
    await journal.flush()
    assert [data["n"] for _w, _k, _s, data in journal.entries()] == [0, 1]
    journal.close()


async def test_commit_callback_and_durable_entries_read_back(tmp_path: Path) -> None:
    commits: list[int] = []
    path = tmp_path / "j.sqlite"
    journal = Journal(path, on_commit=lambda n, _s: commits.append(n))
    writer = asyncio.create_task(journal.run())
    await journal.durable_many([("grid_event", {"id": "e1"}, "e1"), ("setpoint", {"seq": 7}, "c01")])
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    journal.close()
    assert sum(commits) == 2
    with sqlite3.connect(path) as db:  # another connection sees the commit
        assert db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 2


def _insert(path: Path, rows: list[tuple[float, str, str | None, dict]]) -> None:
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)",
            [(w, k, s, json.dumps(d)) for w, k, s, d in rows],
        )
    db.close()


async def test_retention_keeps_what_recovery_needs(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    new = time.time() - 10.0
    old = new - 20_000.0
    rows: list[tuple[float, str, str | None, dict]] = [
        (old + i, "site_power", None, {"kw": i}) for i in range(7000)
    ]
    rows += [
        (old, "setpoint", "c01", {"seq": 1}),
        (old + 1, "setpoint", "c01", {"seq": 2}),  # c01's newest: kept though old
        (old, "setpoint", "c02", {"seq": 3}),
        (new, "setpoint", "c02", {"seq": 4}),  # c02's newest is recent: its old one goes
        (old, "plan", None, {}),
        (new, "plan", None, {}),
        (old, "qse_write", "qse", {"n": 1}),
        (old + 2, "qse_write", "qse", {"n": 2}),  # the QSE link's newest levels: kept though old
    ]
    rows += [(old, kind, "x", {}) for kind in RECOVERY_KINDS]
    _insert(path, rows)

    journal = Journal(path, retention_s=3_000.0, prune_every_s=3600.0)
    writer = asyncio.create_task(journal.run())  # prunes once at start, then every prune_every_s
    await journal.durable("grid_event", {"id": "after"}, "after")  # queued behind the first prune
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    # Everything older than now - 3000 s went, in batches of 5000, except:
    assert journal.pruned == 7000 + 2 + 1 + 1  # site power, c01 seq 1, c02 seq 3, the old plan and levels
    left = {(kind, subject, json.dumps(data)) for _w, kind, subject, data in journal.entries()}
    journal.close()
    assert left == {
        ("setpoint", "c01", '{"seq": 2}'),
        ("setpoint", "c02", '{"seq": 4}'),
        ("plan", None, "{}"),
        ("qse_write", "qse", '{"n": 2}'),
        ("grid_event", "after", '{"id": "after"}'),
        *((kind, "x", "{}") for kind in RECOVERY_KINDS),
    }


async def test_a_writer_cancelled_mid_commit_waits_for_its_write_so_closing_is_safe(tmp_path: Path) -> None:
    """A commit's thread cannot be stopped: cancelling the writer (shutdown) must wait for it, or the
    shutdown flush and close() would use the connection during its transaction."""
    journal = Journal(tmp_path / "journal.sqlite")
    write = journal._write
    in_thread, release = threading.Event(), threading.Event()
    finished: list[int] = []

    def slow_write(batch: list) -> None:  # a disk that stalls mid-transaction
        in_thread.set()
        release.wait(30)
        write(batch)
        finished.append(len(batch))

    journal._write = slow_write  # type: ignore[method-assign]
    committed = asyncio.ensure_future(journal.durable("x", {"i": 1}))
    writer = asyncio.create_task(journal.run())
    assert await asyncio.to_thread(in_thread.wait, 30)
    writer.cancel()
    await asyncio.sleep(0)  # let the cancellation land while the thread is still inside the write
    assert not writer.done()
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(writer, 30)
    assert finished == [1]  # the write ended before run() did
    await asyncio.wait_for(committed, 30)  # and its waiter was told it is on disk
    journal.close()
    assert [data for _, _, _, data in Journal(tmp_path / "journal.sqlite").entries("x")] == [{"i": 1}]
