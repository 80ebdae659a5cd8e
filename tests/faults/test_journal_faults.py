"""Journal faults: a journal that cannot be used stops `mulletd run` with one line and EXIT_JOURNAL (no
traceback, no restart loop under the unit's RestartPreventExitStatus=), `check-config` says why first;
a journal lost (0 bytes) where the broker still holds the site's retained setpoints is detected at
start-up: seq resumes above the broker's, the groups the broker shows curtailed stay curtailed.

Run as root (CI containers), the daemon is started without CAP_DAC_OVERRIDE (setpriv), so file modes
hold for it as they would for the unit's DynamicUser.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import faulty_site, site_at_a_limit, site_config, until

from mullet.daemon.cli import EXIT_CONFIG, EXIT_JOURNAL

MULLETD = Path(sys.executable).with_name("mulletd")
SETPRIV = shutil.which("setpriv")


def _unprivileged(argv: list[str]) -> list[str]:
    """`argv` without the DAC override capabilities when we are root, so chmod binds the daemon."""
    if os.geteuid() != 0:
        return argv
    if SETPRIV is None:
        pytest.skip("as root, mode faults need setpriv to drop CAP_DAC_OVERRIDE")
    return [SETPRIV, "--bounding-set", "-dac_override,-dac_read_search", "--", *argv]


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _truncated(path: Path) -> None:
    """A real journal of 20,000 setpoints cut to its first 300 kB (a disk that lost its tail)."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE journal (id INTEGER PRIMARY KEY, wall_s REAL NOT NULL, monotonic_s REAL NOT NULL,"
        " kind TEXT NOT NULL, subject TEXT, data TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX journal_kind ON journal(kind, subject)")
    row = {"seq": 0, "mode": "run", "power_kw": None, "trip_stage": None, "ts": 1.0}
    db.executemany(
        "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (1, 1, 'setpoint', ?, ?)",
        [(f"c{i % 12:02d}", json.dumps({**row, "seq": i})) for i in range(20_000)],
    )
    db.commit()
    db.close()
    os.truncate(path, 300_000)


def _directory(path: Path) -> None:
    path.mkdir()


def _new_journal(path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mullet.daemon.records.journal import Journal; Journal({str(path)!r}).close()",
        ],
        check=True,
        timeout=60,
    )


def _unreadable(path: Path) -> None:
    _new_journal(path)
    path.chmod(0o000)


def _read_only_file(path: Path) -> None:
    _new_journal(path)
    path.chmod(0o444)


def _read_only_directory(path: Path) -> None:
    _new_journal(path)
    path.parent.chmod(0o555)


def _parent_is_a_file(path: Path) -> None:
    path.parent.parent.joinpath("not-a-dir").write_text("")


# name -> (how to break the journal at `path`, the journal path under tmp_path, words the line must hold)
FAULTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "corrupt": (_garbage, "j/journal.sqlite", "not an SQLite database"),
    "truncated": (_truncated, "j/journal.sqlite", "corrupt SQLite database"),
    "directory": (_directory, "j/journal.sqlite", "is a directory"),
    "unreadable": (_unreadable, "j/journal.sqlite", "cannot be opened (file mode 0000"),
    "read-only file": (_read_only_file, "j/journal.sqlite", "read-only (file mode 0444"),
    "read-only directory": (_read_only_directory, "j/journal.sqlite", "read-only (directory"),
    "unopenable path": (_parent_is_a_file, "not-a-dir/journal.sqlite", "cannot create its directory"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_journal_that_cannot_be_used_stops_the_daemon_with_one_line_and_exit_journal(
    mqtt_broker, tmp_path: Path, fault: str
) -> None:
    breaks, relative, words = FAULTS[fault]
    journal = tmp_path / relative
    journal.parent.mkdir(exist_ok=True) if fault != "unopenable path" else None
    breaks(journal)

    def at(data: dict) -> None:
        data["journal"]["path"] = str(journal)

    _config, config_path = site_config(mqtt_broker.url, tmp_path, at)
    try:
        run = subprocess.run(
            _unprivileged([str(MULLETD), "run", "--config", str(config_path)]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        check = subprocess.run(
            _unprivileged([str(MULLETD), "check-config", str(config_path)]),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        journal.parent.chmod(0o755) if journal.parent.exists() else None
    errors = [line for line in run.stderr.splitlines() if not line.startswith("{")]
    print(f"\n{fault}: exit {run.returncode}: {' | '.join(errors)}")
    print(f"{fault}: check-config exit {check.returncode}: {check.stderr.strip()}")
    assert "Traceback" not in run.stderr + run.stdout
    assert run.returncode == EXIT_JOURNAL
    assert errors == [f"mulletd: journal {journal}: {errors[0].split(': ', 2)[2]}"]
    assert words in errors[0]
    if fault != "truncated":  # check-config reads the header only; the damage is deeper in the file
        assert check.returncode == EXIT_CONFIG, check.stdout
        assert check.stderr.startswith(f"{config_path}: journal.path: ") and str(journal) in check.stderr


def test_check_config_passes_a_journal_path_it_can_create(mqtt_broker, tmp_path: Path) -> None:
    def at(data: dict) -> None:
        data["journal"]["path"] = str(tmp_path / "new" / "deeper" / "journal.sqlite")

    _config, config_path = site_config(mqtt_broker.url, tmp_path, at)
    check = subprocess.run(
        [str(MULLETD), "check-config", str(config_path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
    assert "journal" not in check.stderr  # (the example's trip budget warnings are on stderr too)
    assert not (tmp_path / "new").exists()  # checking creates nothing


async def test_a_zero_byte_journal_with_broker_history_keeps_seq_rising_and_shed_groups_curtailed(
    mqtt_broker, tmp_path: Path
) -> None:
    async with faulty_site(mqtt_broker, tmp_path) as run:
        site, observer, topics = run.site, run.observer, run.topics
        limit_kw = await site_at_a_limit(run, "jl-1", 0.5, "ERS-10")
        last = {sp["group_id"]: sp for sp in observer.group_setpoints()}
        shed = sorted(g for g, sp in last.items() if sp["mode"] == "curtail")
        assert shed
        highest_seq = max(sp["seq"] for sp in observer.group_setpoints())

        run.daemon.kill()
        await run.daemon.wait()
        journal = Path(run.config.journal.path)
        for leftover in (journal.with_name(journal.name + "-wal"), journal.with_name(journal.name + "-shm")):
            leftover.unlink(missing_ok=True)
        os.truncate(journal, 0)  # the journal lost: 0 bytes

        since = len(observer.received)
        await run.restart_daemon()
        first = await observer.wait_for(
            lambda m: m.topic == topics.daemon_plan, 20, since, "the first plan after the restart"
        )
        plan = json.loads(first.payload)
        new = [sp for sp in observer.group_setpoints(since) if sp["seq"] != last[sp["group_id"]]["seq"]]
        print(
            f"\n0-byte journal: seq before the kill {highest_seq}, first plan after the restart {plan['seq']}"
        )
        assert plan["seq"] > highest_seq and all(sp["seq"] > highest_seq for sp in new)
        assert {g: plan["groups"][g]["mode"] for g in shed} == dict.fromkeys(shed, "curtail")
        assert all(sp["mode"] == "curtail" for sp in new if sp["group_id"] in shed)
        await until(lambda: site.site_power_kw() <= limit_kw, 30, "site still at the limit")
        assert await run.metric("mullet_journal_history_lost") == 1.0
        lost = [r for r in run.log_records() if r.get("event", "").startswith("journal is empty but")]
        assert len(lost) == 1 and lost[0]["level"] == "error" and lost[0]["held_curtailed"] == shed
        db = sqlite3.connect(journal)
        kinds = [
            k for (k,) in db.execute("SELECT kind FROM journal WHERE kind IN ('journal_lost', 'override')")
        ]
        db.close()
        assert kinds.count("journal_lost") == 1 and kinds.count("override") == len(shed)
