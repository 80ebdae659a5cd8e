"""The QSE link's state machine (daemon/core/qse.py), on a fake clock against a real obligation book:
levels not edges, the heartbeat's fail-safe, test mode, refusals retried only when they may clear."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers import site_config

from mullet.daemon.config import QseSection
from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.qse import Action, QseLink, slot_of_event
from mullet.daemon.metrics import Metrics
from mullet.daemon.records.journal import Journal
from mullet.daemon.site.recovery import recover, recover_qse
from mullet.drivers.protocol import GridEvent
from mullet.policies.obligations import Decision, ObligationBook

NOW_S = 1_800_000_000.0


class Harness:
    """A link and the book it feeds, the way daemon/site/qse.py drives them (the queue answered at once)."""

    def __init__(self, **settings: object) -> None:
        self.link = QseLink(QseSection(enabled=True, allow_writes=True, **settings), started_mono_s=0.0)
        self.book: ObligationBook = ObligationBook(interconnect_kw=13_000, max_event_kw_factor=2.0)
        self.mono_s = 0.0
        self.site_kw: float | None = 10_000.0
        self.submitted: list[Action] = []

    def write(self, **points: float) -> None:
        assert self.link.check(points) is None
        journaled = self.link.needs_journal(points)
        self.link.apply(points, self.mono_s)
        if journaled:
            self.link.commanded(points)

    def beat(self) -> None:
        self.write(qse_heartbeat=(self.link.levels["qse_heartbeat"] + 1) % 65536)

    def settle(self, limit: int = 20) -> list[Action]:
        """Tick, then carry out actions until the link wants nothing more; returns them."""
        self.link.tick(self.mono_s)
        done = []
        for _ in range(limit):
            action = self.link.next_action(self.book.obligations, NOW_S + self.mono_s, self.mono_s)
            if action is None:
                return done
            decision = self.book.decide(action.event, now_s=NOW_S + self.mono_s, site_power_kw=self.site_kw)
            if decision.accepted and not decision.duplicate:
                self.book.apply(action.event, decision, NOW_S + self.mono_s)
            self.link.outcome(action, decision.accepted, decision.code, self.mono_s)
            if decision.accepted and action.replaces is not None and action.replaces in self.book.obligations:
                cancel = GridEvent(id=action.replaces, kind="cancel", source="qse")
                self.book.apply(cancel, Decision(True, "", cancels=action.replaces), NOW_S + self.mono_s)
            done.append(action)
        raise AssertionError(f"the link kept asking: {done}")

    def held(self) -> dict[str, tuple[str, float]]:
        return {slot_of_event(i) or i: (o.kind, o.kw) for i, o in self.book.obligations.items()}


def test_a_level_deploys_once_and_only_its_clear_recalls() -> None:
    h = Harness()
    h.beat()
    h.write(ers10_deploy_mw=2.0, ers10_deploy=1.0)
    assert [a.event.kind for a in h.settle()] == ["reduce"]
    assert h.held() == {"ERS-10": ("reduce", 2000.0)}
    assert h.link.slot_state("ERS-10") == "deployed" and h.link.command.result == 2
    # The same level again (a gateway's cyclic rewrite), or nothing at all: no event.
    h.write(ers10_deploy_mw=2.0, ers10_deploy=1.0)
    h.mono_s += 1.0
    assert h.settle() == []
    # The amount cannot change under a deployment.
    assert h.link.check({"ers10_deploy_mw": 3.0}) is not None
    h.write(ers10_deploy=0.0)
    assert [a.event.kind for a in h.settle()] == ["cancel"]
    assert h.held() == {} and h.link.slot_state("ERS-10") == "clear"


def test_a_missed_edge_is_caught_by_the_level() -> None:
    """A recall that the book refused to take (journal down, say) is asked again: the level is
    compared with the book every tick, never only on a write."""
    h = Harness(deploy_kw={"ECRS": 1500.0})
    h.beat()
    h.write(ecrs_deploy=1.0)  # 0 MW written: the configured amount
    h.settle()
    assert h.held() == {"ECRS": ("reduce", 1500.0)}
    event_id = next(iter(h.book.obligations))
    del h.book.obligations[event_id]  # gone behind the link's back (e.g. a takeover's book)
    h.mono_s += 0.5
    assert [a.event.kind for a in h.settle()] == ["reduce"]  # the level still asks: deployed again
    assert h.held() == {"ECRS": ("reduce", 1500.0)}


def test_a_new_base_point_is_added_before_the_old_one_goes() -> None:
    h = Harness()
    h.beat()
    h.write(base_point_set_mw=8.0, base_point_on=1.0)
    h.settle()
    first = next(iter(h.book.obligations))
    h.write(base_point_set_mw=5.0)
    action = h.link.next_action(h.book.obligations, NOW_S + 1, 1.0)
    assert action is not None and action.event.kind == "base_point" and action.replaces == first
    h.mono_s += 1.0
    h.settle()
    assert h.held() == {"base_point": ("base_point", 5000.0)}
    h.write(import_limit_set_mw=11.0, import_limit_on=1.0)
    h.settle()
    h.write(import_limit_set_mw=10.5)
    h.settle()
    assert h.held() == {"base_point": ("base_point", 5000.0), "import_limit": ("limit", 10500.0)}


def test_a_lost_heartbeat_applies_only_what_takes_load_off_until_it_moves_again() -> None:
    h = Harness(heartbeat_timeout_s=10.0, fail_safe="limit", fail_safe_limit_kw=9000.0)
    h.beat()
    h.write(ers30_deploy_mw=1.0, ers30_deploy=1.0, base_point_set_mw=6.0, base_point_on=1.0)
    h.settle()
    h.mono_s = 11.0
    assert h.link.tick(h.mono_s) == "lost"
    h.settle()
    assert h.held()["fail_safe"] == ("limit", 9000.0)
    # Writes still arrive (the heartbeat alone stands still): a recall and a higher base point wait,
    # a lower base point applies at once.
    h.write(ers30_deploy=0.0, base_point_set_mw=7.0)
    h.settle()
    assert h.held()["ERS-30"] == ("reduce", 1000.0) and h.held()["base_point"] == ("base_point", 6000.0)
    assert h.link.slot_state("ERS-30") == "held" and h.link.slot_state("base_point") == "held"
    h.write(base_point_set_mw=4.0)
    h.settle()
    assert h.held()["base_point"] == ("base_point", 4000.0)
    # The heartbeat moves: the link is up, the recall applies, the fail-safe ends.
    h.mono_s = 12.0
    h.beat()
    assert h.link.tick(h.mono_s) == "up"
    h.settle()
    assert h.held() == {"base_point": ("base_point", 4000.0)}


def test_never_seen_heartbeat_counts_from_start_up() -> None:
    h = Harness(heartbeat_timeout_s=5.0)
    assert h.link.tick(4.0) is None and h.link.state == "waiting"
    assert h.link.tick(5.0) == "lost"


def test_test_mode_echoes_and_actuates_nothing_new() -> None:
    h = Harness()
    h.beat()
    h.write(ers10_deploy_mw=1.0, ers10_deploy=1.0)
    h.settle()
    h.write(test_mode=1.0)
    h.write(nonspin_deploy_mw=2.0, nonspin_deploy=1.0)
    assert h.settle() == []
    assert h.link.slot_state("Non-Spin") == "test" and h.link.command.result == 4
    assert h.held() == {"ERS-10": ("reduce", 1000.0)}  # what was deployed stays
    h.write(test_mode=0.0)
    h.settle()
    assert h.held()["Non-Spin"] == ("reduce", 2000.0)


@pytest.mark.parametrize(("code", "retried"), [("no_baseline", True), ("kw_absurd", False)])
def test_refusals_are_retried_only_when_they_may_clear(code: str, retried: bool) -> None:
    h = Harness()
    h.beat()
    if code == "no_baseline":
        h.site_kw = None  # a reduce needs the meter at acceptance
        h.write(ers10_deploy_mw=1.0, ers10_deploy=1.0)
    else:
        h.write(import_limit_set_mw=90.0, import_limit_on=1.0)  # above 2 x the interconnect
    slot = "ERS-10" if code == "no_baseline" else "import_limit"
    assert len(h.settle()) == 1
    assert h.link.slot_state(slot) == "refused" and h.link.refusal(slot) == code
    h.site_kw = 10_000.0
    h.mono_s += 1.0
    assert h.settle() == []  # not before RETRY_S
    h.mono_s += 5.0
    assert (len(h.settle()) == 1) is retried
    assert (h.link.slot_state(slot) == "deployed") is retried


def test_a_restart_takes_back_the_levels_and_the_deployments(tmp_path: Path) -> None:
    """The QSE's registers live in the daemon: after a restart the journal's newest levels and the
    recovered book say what is deployed, so the first tick recalls nothing (a restart is no clear)."""

    def mutate(data: dict) -> None:
        data["qse"] = {"enabled": True, "allow_writes": True}

    config, _path = site_config("mqtt://127.0.0.1:1883", tmp_path, mutate)
    levels = {**QseLink(config.qse, 0.0).levels, "ers10_deploy_mw": 2.0, "ers10_deploy": 1.0}
    event = {"v": 1, "id": "qse:ers10:1800000000000", "kind": "reduce", "kw": 2000.0, "program": "ERS-10"}
    obligation = {
        "event_id": event["id"],
        "kind": "reduce",
        "kw": 2000.0,
        "start_s": NOW_S,
        "end_s": None,
        "baseline_kw": 10_000.0,
        "program": "ERS-10",
        "explicit_recall": True,
    }
    Journal(config.journal.path).close()
    with sqlite3.connect(config.journal.path) as db:
        db.executemany(
            "INSERT INTO journal (wall_s, monotonic_s, kind, subject, data) VALUES (?, 0, ?, ?, ?)",
            [
                (
                    NOW_S,
                    "qse_write",
                    "qse",
                    json.dumps({"peer": "10.0.0.9:4000", "points": {}, "levels": levels}),
                ),
                (
                    NOW_S,
                    "grid_event",
                    event["id"],
                    json.dumps({"event": event, "obligation": obligation, "cancels": None}),
                ),
            ],
        )
    journal = Journal(config.journal.path)
    core = SiteController(config, Metrics(), seq=0, has_pdus=False)
    recover(journal, core, NOW_S + 60)
    link = QseLink(config.qse, started_mono_s=0.0)
    recover_qse(journal, core, link)
    journal.close()
    assert link.levels["ers10_deploy"] == 1.0 and link.held["ERS-10"].event_id == event["id"]
    assert link.next_action(core.book.obligations, NOW_S + 61, 1.0) is None
    assert link.slot_state("ERS-10") == "deployed"


def test_a_takeover_book_is_adopted_as_asserted_never_recalled() -> None:
    """A standby that takes over holds the leader's QSE obligations but none of its registers: it
    takes them as asserted (levels set to match) until the QSE writes otherwise."""
    leader = Harness(heartbeat_timeout_s=10.0, fail_safe="limit", fail_safe_limit_kw=9000.0)
    leader.beat()
    leader.write(ers10_deploy_mw=2.0, ers10_deploy=1.0)
    leader.settle()
    leader.mono_s = 11.0
    leader.settle()  # lost: the fail-safe limit joins the book
    new = Harness(heartbeat_timeout_s=10.0, fail_safe="limit", fail_safe_limit_kw=9000.0)
    new.book = leader.book
    assert new.settle() == []
    assert new.link.levels["ers10_deploy"] == 1.0 and new.link.slot_state("ERS-10") == "deployed"
    assert set(new.held()) == {"ERS-10", "fail_safe"}  # the fail-safe waits for the link to be seen up
    new.beat()
    new.mono_s = 1.0
    assert [a.event.kind for a in new.settle()] == ["cancel"] and set(new.held()) == {"ERS-10"}
    new.write(ers10_deploy=0.0)
    new.settle()
    assert new.held() == {}


def test_the_stage_points_follow_a_trip_from_armed_to_tripped_released_and_armed(tmp_path: Path) -> None:
    """The under-frequency slots as the QSE reads them (daemon/core/qse_telemetry.py), on the controller
    core driven through a trip on a fake clock (test_controller's shell)."""
    from test_controller import POLL, Shell

    from mullet.daemon.core.qse_telemetry import input_values

    shell = Shell(tmp_path)
    shell.start()
    shell.run_for(5, meter_reads=POLL)
    link = QseLink(QseSection(enabled=True), started_mono_s=0.0)

    def points() -> dict[str, float]:
        return input_values(shell.core, link, shell.now_mono_s)

    armed = points()
    assert (armed["stage1_number"], armed["stage1_relay"]) == (1.0, 1.0) and armed["stage1_armed_mw"] > 0.5
    assert armed["stage2_number"] == 2.0 and armed["stage3_number"] == 0.0
    assert armed["mining_mw"] > armed["lpc_fast_mw"] >= armed["lpc_10min_mw"] >= 0.0
    shell.hz = 59.80  # below stage 1, above stage 2
    shell.run_for(5, meter_reads=POLL)
    tripped = points()
    assert tripped["stage1_relay"] == 2.0 and tripped["stage2_relay"] == 1.0
    shell.hz = 60.0
    shell.run_for(shell.core.trigger.settings.release_after_s + 1.0, meter_reads=POLL)
    assert points()["stage1_relay"] == 3.0  # released; its groups restoring through the ramp
    shell.run_for(120, meter_reads=POLL)
    assert points()["stage1_relay"] == 1.0
