"""What a restarted daemon takes back from its journal, read once at start-up.

Each function reads one kind of state and returns it; `recover` hands it all to the controller core.
A restart must never restore load the last run had shed: obligations, the last command to each group
(min on/off times), the restore ramp's ledger, under-frequency holds and hard cuts,
and operator overrides all survive.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from mullet.daemon.core.controller import SiteController
from mullet.daemon.core.obligation_book import Decision, ObligationBook
from mullet.daemon.core.qse import Held, QseLink, Want, slot_of_event
from mullet.daemon.records.journal import Journal
from mullet.drivers.protocol import GridEvent, GroupSetpoint
from mullet.policies.model import GroupMemory, GroupMode, Obligation, Override, PolicyMemory
from mullet.policies.trigger import trip_hold

Outlet = tuple[str, int]
log = structlog.get_logger("mullet.daemon")


def replay_obligations(journal: Journal, book: ObligationBook, now_s: float) -> None:
    """Accepted and cancelled events, in order, into `book`; then drop those that have ended."""
    for wall_s, _kind, _subject, data in journal.entries(("grid_event", "drill")):
        event = GridEvent.model_validate(data["event"])
        obligation = Obligation(**data["obligation"]) if data.get("obligation") else None
        decision = Decision(True, "recovered", obligation=obligation, cancels=data.get("cancels"))
        book.apply(event, decision, now_s=wall_s)
    book.expire(now_s)  # and forget what ended longer ago than the book's history keeps


def commanded(journal: Journal, group_ids: Collection[str]) -> tuple[dict[str, GroupSetpoint], PolicyMemory]:
    """The last setpoint to each group, and the plan memory it implies: the setpoint's time stands in
    for the last switch (min on/off can only lengthen), and the last minute's restores for the ramp."""
    setpoints: dict[str, GroupSetpoint] = {}
    memory: dict[str, GroupMemory] = {}
    for group_id, data in journal.last_setpoints().items():
        if group_id not in group_ids:
            continue
        setpoint = GroupSetpoint.model_validate({"v": 1, **data})
        setpoints[group_id] = setpoint
        memory[group_id] = GroupMemory(setpoint.mode, setpoint.power_kw, setpoint.ts)
    window_start_s = time.time() - 60.0
    ledger = tuple(
        sorted(
            (float(data["t"]), float(data["kw"]))
            for _wall_s, _kind, _subject, data in journal.entries("restore")
            if data["t"] > window_start_s
        )
    )
    return setpoints, PolicyMemory(groups=memory, restores=ledger)


@dataclass
class FastPathHolds:
    """Frequency trips not yet released, and groups whose outlets are cut."""

    # seq -> (wall_s, stage, groups) of each frequency trip not yet released
    open_trips: dict[int, tuple[float, int, list[str]]] = field(default_factory=dict)
    hard_cut: set[str] = field(default_factory=set)

    @property
    def latched_stages(self) -> frozenset[int]:
        return frozenset(stage for _wall_s, stage, _groups in self.open_trips.values())

    def obligations(self, interconnect_kw: float) -> list[Obligation]:
        """The `ufr-` holds: restores wait for the trigger's release, seen by this process."""
        return [
            trip_hold(seq, stage, interconnect_kw, wall_s)
            for seq, (wall_s, stage, _g) in self.open_trips.items()
        ]

    def shed(self, memory: PolicyMemory, group_ids: Collection[str]) -> PolicyMemory:
        """The trip shed its groups whatever the last setpoint said (the curtail setpoints that follow a
        trip may not have gone out before the restart)."""
        groups = dict(memory.groups)
        for wall_s, _stage, tripped in self.open_trips.values():
            for group_id in tripped:
                last = groups.get(group_id)
                if group_id in group_ids and (last is None or last.mode != "curtail"):
                    groups[group_id] = GroupMemory("curtail", None, wall_s)
        return dataclasses.replace(memory, groups=groups)


def fast_path_holds(
    journal: Journal, outlets_by_group: Mapping[str, Sequence[Outlet]], group_ids: Collection[str]
) -> FastPathHolds:
    holds = FastPathHolds()
    kinds = ("trip", "trip_released", "escalation", "outlets_restored")
    for wall_s, kind, _subject, data in journal.entries(kinds):
        if kind == "trip":
            if data.get("cause") == "frequency":
                holds.open_trips[int(data["seq"])] = (
                    wall_s,
                    int(data["stage"]),
                    list(data.get("groups", ())),
                )
            cut = {tuple(o) for o in data.get("outlets", ())}
            for group_id in data.get("groups", ()):
                outlets = outlets_by_group.get(group_id, [])
                if outlets and all(o in cut for o in outlets):
                    holds.hard_cut.add(group_id)
        elif kind == "trip_released":
            holds.open_trips.clear()
        elif kind == "escalation" and data.get("result") == "ok":
            holds.hard_cut.add(str(data["group_id"]))
        elif kind == "outlets_restored":
            holds.hard_cut.discard(str(data["group_id"]))
    holds.hard_cut &= set(group_ids)
    return holds


def overrides(journal: Journal, group_ids: Collection[str], now_s: float) -> dict[str, Override]:
    """Operator holds still in force: the last entry per group wins ("auto" releases)."""
    held: dict[str, Override] = {}
    for _wall_s, _kind, _subject, data in journal.entries("override"):
        group_id, mode = str(data["group_id"]), data["mode"]
        if mode in ("run", "curtail") and data["until"] > now_s and group_id in group_ids:
            held_mode: GroupMode = "run" if mode == "run" else "curtail"
            held[group_id] = Override(group_id, held_mode, float(data["until"]), str(data["note"]))
        else:
            held.pop(group_id, None)
    return held


def recover_qse(journal: Journal, core: SiteController, link: QseLink) -> None:
    """The QSE link's levels as last journaled, and the obligations it holds in the recovered book:
    a restart must not read as a recall (the QSE's registers live in this process)."""
    last = journal.last("qse_write")
    levels = last[3].get("levels", {}) if last is not None else {}
    held = {}
    for event_id, obligation in core.book.obligations.items():
        slot = slot_of_event(event_id)
        if slot is not None and obligation.kind in ("limit", "reduce", "base_point"):
            kind = obligation.kind
            held[slot] = Held(event_id, Want(kind, obligation.kw, obligation.program))
    link.adopt(levels, held)
    if levels or held:
        log.info(
            "recovered qse link", levels=len(levels), obligations=sorted(h.event_id for h in held.values())
        )


def recover(journal: Journal, core: SiteController, now_s: float) -> None:
    """Take back what the last run held: a restart never restores load the last run had shed."""
    core.overrides = overrides(journal, core.group_ids, now_s)
    replay_obligations(journal, core.book, now_s)
    core.commanded, core.memory = commanded(journal, core.group_ids)
    holds = fast_path_holds(journal, core.outlets_by_group, core.group_ids)
    core.hard_cut = holds.hard_cut
    core.memory = holds.shed(core.memory, core.group_ids)
    for hold in holds.obligations(core.site.interconnect_kw):
        core.add_hold(hold)
    core.trigger.latch(holds.latched_stages)
    if holds.open_trips or holds.hard_cut:
        log.warning(
            "recovered under-frequency holds",
            obligations=sorted(hold.event_id for hold in holds.obligations(core.site.interconnect_kw)),
            hard_cut=sorted(holds.hard_cut),
        )
