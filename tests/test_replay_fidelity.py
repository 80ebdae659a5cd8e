"""Fidelity of `mulletd replay`: the same grid events played live (`mulletd run` against `mulletd
simulate`, two processes, over the test's mosquitto and Modbus TCP) and through `Replay` in simulated
time must give the same decisions and, within the mechanisms' latencies, the same timing. The test
sees the live site only as the daemon does: on the wire (group states, setpoints, the plan) and
through the journal (the meter). docs/replay.md, "Fidelity: live against replay", explains the
tolerances.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from helpers import SiteProcesses, site_processes, until

from mullet.daemon.config import Config
from mullet.daemon.core.commands import RecordInBackground, SendSetpoints
from mullet.daemon.replay.engine import Replay
from mullet.daemon.replay.scenario import load_scenario
from mullet.drivers.protocol import GridEvent

# The replay runs on its own date: nothing it decides may depend on the wall clock.
REPLAY_START = datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
SITE_POWER_EVERY_S = 0.05  # every meter poll (10 Hz) journaled, so the live time to target is not coarser
F1_HOLD_S = 3.0  # the last event expires this long after it is sent (the expiry path)
LOAD_MARGIN_S = 1.5  # a loaded 2-core machine delays the live daemon's cycle, MQTT and Modbus
JOURNAL_WRITE_S = 0.5  # a fast-path event is journaled after its trip fired: live notice is later
# The control period, live and replay's step: the shortest hold of the compressed config (restore
# stagger, min off). Live also plans whenever an input wakes it, so it ends a hold at the first cycle
# after it; replay plans once a step and would round a shorter hold up to a whole step.
PERIOD_S = 0.5


def _fidelity_site(data: dict) -> None:
    assert data["control"]["restore_stagger_s"] == data["control"]["min_off_s"] == PERIOD_S
    data["control"]["period_s"] = PERIOD_S
    data["simulator"].pop("tenants", None)  # the default demand, constant, as the replay assumes
    data["journal"]["site_power_every_s"] = SITE_POWER_EVERY_S


@dataclass
class Outcome:
    """One grid event as one side saw it."""

    obligation: dict[str, Any]  # id, kind, kw, program, actuation, explicit recall
    shed: set[str]  # groups commanded to curtail (setpoint or trip) while it was in force
    time_to_target_s: float | None
    ended_by: str
    baseline_kw: float | None


def _obligation(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data[k] for k in ("event_id", "kind", "kw", "program", "actuation", "explicit_recall")}


def _target_kw(obligation: dict[str, Any]) -> float:
    if obligation["kind"] == "limit":
        return float(obligation["kw"])
    return float(obligation["baseline_kw"]) - float(obligation["kw"])


def _first_at_or_below(
    samples: list[tuple[float, float]], from_s: float, until_s: float, kw: float
) -> float | None:
    for t_s, power_kw in samples:
        if from_s <= t_s <= until_s and power_kw <= kw:
            return t_s - from_s
    return None


# ---- the live side: the journal ---------------------------------------------------------------


def _rows(journal: Path, kinds: tuple[str, ...]) -> list[tuple[float, str, str | None, dict]]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(kinds))
        query = f"SELECT wall_s, kind, subject, data FROM journal WHERE kind IN ({marks}) ORDER BY id"
        return [(float(w), k, s, json.loads(d)) for w, k, s, d in db.execute(query, kinds)]
    finally:
        db.close()


def _live_events(journal: Path) -> list[tuple[float, dict]]:
    """(journaled at, event) for every accepted grid event and cancel, in order."""
    return [(t, data["event"]) for t, _, _, data in _rows(journal, ("grid_event",))]


def _live_outcomes(journal: Path) -> dict[str, Outcome]:
    rows = _rows(journal, ("grid_event", "obligation_ended", "setpoint", "trip", "site_power"))
    samples = [(t, float(d["kw"])) for t, k, _, d in rows if k == "site_power"]
    out = {}
    for notice_s, kind, _, data in rows:
        if kind != "grid_event" or data["obligation"] is None:
            continue
        event_id = data["event"]["id"]
        ends = [
            (t, "recall" if k == "grid_event" else "expiry")
            for t, k, s, d in rows
            if (k == "grid_event" and d.get("cancels") == event_id)
            or (k == "obligation_ended" and s == event_id)
        ]
        end_s, ended_by = ends[0]
        shed = {
            s for t, k, s, d in rows if k == "setpoint" and d["mode"] == "curtail" and notice_s <= t <= end_s
        }
        shed |= {g for _, k, _, d in rows if k == "trip" and d["cause"] == event_id for g in d["groups"]}
        obligation = data["obligation"]
        deploy_s = max(notice_s, float(obligation["start_s"]))
        out[event_id] = Outcome(
            _obligation(obligation),
            shed,
            _first_at_or_below(samples, deploy_s, end_s, _target_kw(obligation)),
            ended_by,
            obligation.get("baseline_kw"),
        )
    return out


# ---- the replay side: a scenario written from the live journal ---------------------------------


def _write_scenario(tmp_path: Path, events: list[tuple[float, dict]], live_start_s: float) -> Path:
    """The live schedule as a replay scenario (TOML + events CSV), shifted to REPLAY_START: each event
    at the moment the live daemon journaled it, relative to the live run's start."""
    shift_s = REPLAY_START.timestamp() - live_start_s

    def when(t_s: float | None) -> str:
        return "" if t_s is None else repr(t_s + shift_s)  # Unix seconds, full precision

    with (tmp_path / "events.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "id", "kind", "kw", "start", "end", "program", "trip_stage"])
        for t_s, e in events:
            kw = "" if e["kw"] is None else repr(e["kw"])
            stage = "" if e.get("trip_stage") is None else str(e["trip_stage"])
            writer.writerow(
                [
                    when(t_s),
                    e["id"],
                    e["kind"],
                    kw,
                    when(e["start"]),
                    when(e["end"]),
                    e["program"] or "",
                    stage,
                ]
            )
    end_s = events[-1][0] - live_start_s + 60.0  # the restore after the last event, in simulated time
    scenario = {
        "scenario": {
            "name": "fidelity",
            "start": REPLAY_START,
            "end": datetime.fromtimestamp(REPLAY_START.timestamp() + end_s, UTC),
        },
        "events": {"file": "events.csv"},
    }
    path = tmp_path / "scenario.toml"
    path.write_text(tomli_w.dumps(scenario))
    return path


def _replay_outcomes(config: Config, scenario_path: Path) -> tuple[Replay, dict[str, Outcome]]:
    """Run the replay, keeping every command its core emits with the simulated time (what the live
    journal holds for the daemon)."""
    replay = Replay(config, load_scenario(scenario_path))
    emitted: list[tuple[float, Any]] = []
    take = replay.core.take

    def taking() -> list[Any]:
        commands = take()
        emitted.extend((replay.now_s, c) for c in commands)
        return commands

    replay.core.take = taking  # type: ignore[method-assign]  # a tap on the outbox, nothing replaced
    replay.run()
    samples = list(zip(replay.samples_t, replay.samples_kw, strict=True))
    out = {}
    for event_id, log in replay.events.items():
        end_s = log.end_s if log.end_s is not None else replay.scenario.end_s
        shed = {
            g
            for t, c in emitted
            if isinstance(c, SendSetpoints) and log.notice_s <= t <= end_s
            for g, sp, _ in c.setpoints
            if sp.mode == "curtail"
        }
        shed |= {
            g
            for _, c in emitted
            if isinstance(c, RecordInBackground) and c.kind == "trip" and c.data["cause"] == event_id
            for g in c.data["groups"]
        }
        deploy_s = max(log.notice_s, float(log.obligation["start_s"]))
        out[event_id] = Outcome(
            _obligation(log.obligation),
            shed,
            _first_at_or_below(samples, deploy_s, end_s, _target_kw(log.obligation)),
            log.ended_by or "in force",
            log.obligation.get("baseline_kw"),
        )
    return replay, out


# ---- the live run ----------------------------------------------------------------------------


async def _steady(live: SiteProcesses) -> None:
    """Every group back at rated power, running, and armed as the newest plan says (a trip_stage event
    fires what is armed), then one replay step more: the replay restores on its step grid, up to a
    step after the daemon, and must be steady too when the next event comes. Read on the wire: a
    group's last state reports its mode and power after the last setpoint sent to it (`seq_applied`),
    and that setpoint says what it is armed at."""
    observer, topics = live.observer, live.topics
    groups = {
        g.group_id: (g.rated_kw, topics.group_state(g.group_id), topics.group_set(g.group_id))
        for g in live.config.groups
    }
    wire = [topics.daemon_plan, *(t for _, *ts in groups.values() for t in ts)]

    def steady() -> bool:
        last = observer.latest(wire)
        if topics.daemon_plan not in last:
            return False
        plan = last[topics.daemon_plan].json()
        if plan["active_obligations"]:
            return False
        for group_id, (rated_kw, state_topic, set_topic) in groups.items():
            if state_topic not in last:
                return False
            state = last[state_topic].json()
            # No setpoint yet: the group runs as it started, unarmed.
            setpoint = last[set_topic].json() if set_topic in last else {"seq": None, "mode": "run"}
            if not (
                setpoint["mode"] == "run"
                and state["seq_applied"] == setpoint["seq"]
                and state["mode"] == "run"
                and state["power_kw"] >= rated_kw - 1e-6
                and setpoint.get("trip_stage") == plan["groups"][group_id]["trip_stage"]
            ):
                return False
        return True

    await observer.wait_state(steady, 30, "every group back at rated, armed as planned")
    steady_s, journal = time.time(), Path(live.config.journal.path)
    await until(
        lambda: any(t >= steady_s + PERIOD_S for t, *_ in _rows(journal, ("site_power",))[-3:]),
        30,
        "the journal a replay step on",
        poll_s=0.1,
    )


def _site_kw(journal: Path) -> float:
    """The meter's last sample, as the daemon journaled it."""
    return float(_rows(journal, ("site_power",))[-1][3]["kw"])


async def _met(live: SiteProcesses, event: GridEvent, target_kw: float) -> None:
    """Accepted, a journaled site power sample at or below `target_kw` after the live notice, and held
    a step more: live may reach the target a physics tick early, and replay, which samples on its
    step grid and at each input, must have reached it too when the recall comes."""
    assert (await live.observer.ack(event.id, 30))["accepted"] is True
    journal = Path(live.config.journal.path)
    notice_s = next(t for t, e in _live_events(journal) if e["id"] == event.id and e["kind"] == event.kind)

    def met_s() -> float | None:
        rows = _rows(journal, ("site_power",))
        return next((t for t, _, _, d in rows if t >= notice_s and d["kw"] <= target_kw), None)

    what = f"{event.id}: the journal's site power at or below {target_kw:.0f} kW"
    await until(lambda: met_s() is not None, 30, what, poll_s=0.1)
    held_s = (met_s() or 0.0) + PERIOD_S
    await until(lambda: _rows(journal, ("site_power",))[-1][0] >= held_s, 30, f"{what}, held", poll_s=0.1)


async def _cancel(live: SiteProcesses, event_id: str) -> None:
    seen = len(live.observer.received)
    await live.observer.send(GridEvent(id=event_id, kind="cancel", source="test"))
    assert (await live.observer.ack(event_id, 30, since=seen))["accepted"] is True


async def test_replay_of_a_live_run_curtails_the_same_groups_in_about_the_same_time(
    mqtt_broker: Any, tmp_path: Path
) -> None:
    """Three grid events live, then the same schedule replayed; per event they must agree on:

    - the obligation accepted (id, kind, kw, program, actuation): identical, the same obligation book
      decides on the same event;
    - the groups commanded to curtail while it was in force: identical sets, the same plan on the same
      inputs (every group at rated, the AI tenants at 0.9 x reserved, the same armed stages);
    - a `reduce` event's baseline (the meter at acceptance): within 1 kW, the float32 meter register;
    - how it ended (recall or expiry): identical;
    - the time to target (first site power sample at or below the target after deployment):
      -(step + 1/tick + JOURNAL_WRITE_S) <= live - replay
      <= period + 1/tick + max(1/poll, site_power_every) + LOAD_MARGIN_S.
      Replay applies a setpoint at the event's instant and samples the site once a step, so its time
      is the ramp rounded up to a step; live adds what replay does not have: the cycle (woken at
      once, at worst the next period), MQTT, the simulator's tick, the meter poll and the journal's
      sample rate. Live can look early by a tick (a setpoint landing between two physics ticks ramps
      for the whole next one) and a fast-path event by its journal write (the trip fires first, the
      live notice is the journal row). The lower bound is the tight one: the machine's load only ever
      makes live slower.
    """
    async with site_processes(mqtt_broker, tmp_path, _fidelity_site) as processes:
        config = processes.config
        journal = Path(config.journal.path)
        live_start_s = time.time()
        mining_rated_kw = sum(g.rated_kw for g in config.groups)
        ai_allowance_kw = sum(t.reserved_kw + t.headroom_kw for t in config.tenants)
        floor_kw = config.site.safety_margin_kw + config.site.base_load_kw + ai_allowance_kw
        await _steady(processes)
        full_kw = _site_kw(journal)  # the meter, steady, just before the event

        # L1: a limit that leaves mining 80 % of its rated power, recalled once met.
        l1 = GridEvent(id="fid-l1", kind="limit", kw=floor_kw + 0.8 * mining_rated_kw, source="test")
        await processes.observer.send(l1)
        await _met(processes, l1, l1.kw or 0.0)
        await _cancel(processes, l1.id)
        await _steady(processes)

        # R1: an ERS-10 reduce below the meter at acceptance, recalled once met (ERS ends only on recall).
        r1 = GridEvent(id="fid-r1", kind="reduce", kw=800.0, program="ERS-10", source="test")
        await processes.observer.send(r1)
        await _met(processes, r1, full_kw - 800.0 - 1.0)
        await _cancel(processes, r1.id)
        await _steady(processes)

        # F1: an immediate deployment of armed stage 1 with a limit the trip alone meets; it expires.
        f1 = GridEvent(
            id="fid-f1",
            kind="limit",
            kw=_site_kw(journal) - 800.0,
            trip_stage=1,
            program="FFR",
            end=time.time() + F1_HOLD_S,
            source="test",
        )
        await processes.observer.send(f1)
        await _met(processes, f1, f1.kw or 0.0)
        await until(
            lambda: any(s == f1.id for _, _, s, _ in _rows(journal, ("obligation_ended",))),
            30,
            "fid-f1 expired in the journal",
            poll_s=0.1,
        )
        live = _live_outcomes(journal)
        events = _live_events(journal)

        scenario_path = _write_scenario(tmp_path, events, live_start_s)
        replay, replayed = _replay_outcomes(config, scenario_path)

        assert set(live) == set(replayed) == {"fid-l1", "fid-r1", "fid-f1"}
        assert replay.acks == {"accepted": 5, "duplicate": 0, "rejected": 0}
        step_s, control = replay.step_s, config.control
        upper_s = (
            control.period_s
            + 1.0 / config.simulator.tick_hz
            + max(1.0 / config.meter.poll_hz, SITE_POWER_EVERY_S)
            + LOAD_MARGIN_S
        )
        lower_s = -(step_s + 1.0 / config.simulator.tick_hz + JOURNAL_WRITE_S)
        figures = {}
        for event_id in sorted(live):
            lv, rp = live[event_id], replayed[event_id]
            assert lv.obligation == rp.obligation, event_id
            assert lv.shed == rp.shed and lv.shed, (event_id, lv.shed, rp.shed)
            assert lv.ended_by == rp.ended_by, event_id
            if lv.baseline_kw is not None or rp.baseline_kw is not None:
                assert lv.baseline_kw == pytest.approx(rp.baseline_kw, abs=1.0), event_id
            assert lv.time_to_target_s is not None and rp.time_to_target_s is not None, (event_id, lv, rp)
            difference_s = lv.time_to_target_s - rp.time_to_target_s
            figures[event_id] = (round(lv.time_to_target_s, 3), round(rp.time_to_target_s, 3))
            assert lower_s <= difference_s <= upper_s, (event_id, lv.time_to_target_s, rp.time_to_target_s)
        print(f"time to target (live s, replay s): {figures}; bounds {lower_s:g} .. {upper_s:g} s")
