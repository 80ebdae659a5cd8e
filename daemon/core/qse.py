"""The QSE link's state: the levels its gateway wrote, its heartbeat, and what they ask of the book.

Deployments are level-held (docs/qse.md): a product is deployed while its register says 1 and recalled
when it says 0, so the link compares what the levels ask for with what the book holds and closes the
gap one grid event at a time (`next_action`), however many writes came in between; a missed or
repeated write changes nothing. Each gap is closed through the site's one grid-event queue, so a QSE
deployment is decided, journaled and recovered like any other event.

While the QSE's heartbeat stands still the link is lost, and only what takes load off is applied: new
deployments, lower base points and import limits. A recall, a higher base point or limit waits until
the heartbeat moves again (a stale signal must never restore load silently); with `fail_safe =
"limit"` the site also holds its import under the configured level until then.

Pure: no clock, no I/O; the shell (daemon/site/qse.py) feeds it times and carries out its actions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from mullet.daemon.config import QseSection
from mullet.drivers.protocol import GridEvent
from mullet.drivers.qse_points import HOLDING_POINTS, POINTS, PRODUCTS, slug
from mullet.policies.model import Obligation

ID_PREFIX = "qse:"
# What a product deploys: ERCOT's products to the catalogue's programs (policies/programs.py). A
# manual RRS deployment fires the armed stage at RRS's relay setting at once (stricter than needed).
PRODUCT_PROGRAMS: Mapping[str, str] = {
    "ERS-10": "ERS-10",
    "ERS-30": "ERS-30",
    "ECRS": "ECRS",
    "Non-Spin": "Non-Spin",
    "RRS": "RRS-UFR",
}
SLOTS: tuple[str, ...] = (*PRODUCTS, "base_point", "import_limit", "fail_safe")
# Refusals that may clear by themselves: asked again every RETRY_S while the level stays asserted.
TRANSIENT_CODES = frozenset({"no_baseline", "journal_unavailable", "queue_full", "timeout"})
RETRY_S = 5.0

LinkState = Literal["waiting", "up", "lost"]
SlotState = Literal["clear", "deploying", "deployed", "refused", "test", "held"]
STATE_CODES: Mapping[str, int] = {
    "clear": 0,
    "deploying": 1,
    "deployed": 2,
    "refused": 3,
    "test": 4,
    "held": 5,
}


@dataclass(frozen=True, slots=True)
class Want:
    """What a slot asks of the book."""

    kind: Literal["limit", "reduce", "base_point"]
    kw: float
    program: str


@dataclass(frozen=True, slots=True)
class Held:
    event_id: str
    want: Want


@dataclass(frozen=True, slots=True)
class Action:
    """One grid event to submit for `slot`: a new obligation (then `cancels` the one it replaces, if
    still held), or a recall (`want` None)."""

    slot: str
    event: GridEvent
    want: Want | None
    replaces: str | None = None
    orphan: bool = False  # the cancel of a second obligation for a held slot


@dataclass(frozen=True, slots=True)
class Command:
    """The last accepted write that changed a point, and what became of it (docs/qse.md)."""

    count: int = 0
    address: int = 0
    value: float = math.nan
    slot: str | None = None
    result: int = 0


@dataclass
class QseLink:
    settings: QseSection
    started_mono_s: float
    levels: dict[str, float] = field(default_factory=lambda: {p.name: 0.0 for p in HOLDING_POINTS})
    held: dict[str, Held] = field(default_factory=dict)
    # Slot -> (the want the site refused, its code, when): asked again only when the want changes, or
    # after RETRY_S for a transient code.
    refused: dict[str, tuple[Want, str, float]] = field(default_factory=dict)
    state: LinkState = "waiting"
    heartbeat_mono_s: float | None = None
    command: Command = Command()
    _last_id_ms: int = 0

    # ---- writes ------------------------------------------------------------------------------

    def check(self, changes: Mapping[str, float]) -> str | None:
        """Why a range-checked write cannot be taken (answered ILLEGAL_VALUE), or None."""
        merged = {**self.levels, **changes}
        for product in PRODUCTS:
            s = slug(product)
            amount_kw = merged[f"{s}_deploy_mw"] * 1000.0
            held = self.held.get(product)
            if held is not None and f"{s}_deploy_mw" in changes and merged[f"{s}_deploy"] == 1.0:
                if self._amount_kw(product, amount_kw) != held.want.kw:
                    return f"{product}: the amount cannot change while deployed; recall, then deploy again"
            if merged[f"{s}_deploy"] == 1.0 and self._amount_kw(product, amount_kw) is None:
                return f"{product}: deployed with 0 MW and no qse.deploy_kw configured for it"
        return None

    def needs_journal(self, changes: Mapping[str, float]) -> bool:
        """Whether a write changes a level other than the heartbeat: what is journaled before `apply`."""
        return any(self.levels.get(k) != v for k, v in changes.items() if k != "qse_heartbeat")

    def apply(self, changes: Mapping[str, float], now_mono_s: float) -> None:
        """Take a checked write (after it is journaled, when `needs_journal`)."""
        if changes.get("qse_heartbeat", self.levels["qse_heartbeat"]) != self.levels["qse_heartbeat"]:
            self.heartbeat_mono_s = now_mono_s
        self.levels.update(changes)

    def commanded(self, changes: Mapping[str, float]) -> None:
        """Remember an accepted write that changed a level (after `apply`), for the command points."""
        name = min((k for k in changes if k != "qse_heartbeat"), key=lambda k: POINTS[k].address)
        slot = _slot_of(name)
        result = 5  # a setting, or a level already in force: nothing to apply
        if slot is not None:
            held, want = self.held.get(slot), self.want(slot)
            if self.slot_state(slot) == "test":
                result = 4
            elif (want is None) != (held is None) or (held is not None and held.want != want):
                result = 1
        self.command = Command(
            (self.command.count + 1) % 65536, POINTS[name].address, changes[name], slot, result
        )

    # ---- the heartbeat -----------------------------------------------------------------------

    def tick(self, now_mono_s: float) -> LinkState | None:
        """The link's new state when it changed: lost when the heartbeat stood still for the
        timeout (from start-up, if it never moved), up when it moves again."""
        timeout_s = self.settings.heartbeat_timeout_s
        last_s = self.heartbeat_mono_s if self.heartbeat_mono_s is not None else self.started_mono_s
        fresh = now_mono_s - last_s < timeout_s
        if fresh and self.heartbeat_mono_s is not None and self.state != "up":
            self.state = "up"
            return "up"
        if not fresh and self.state != "lost":
            self.state = "lost"
            return "lost"
        return None

    def heartbeat_age_s(self, now_mono_s: float) -> float | None:
        return None if self.heartbeat_mono_s is None else now_mono_s - self.heartbeat_mono_s

    # ---- what the levels ask -----------------------------------------------------------------

    def _amount_kw(self, product: str, written_kw: float) -> float | None:
        if written_kw > 0:
            return written_kw
        return self.settings.deploy_kw.get(product)

    def asked(self, slot: str) -> Want | None:
        """What the levels alone ask for `slot`."""
        levels = self.levels
        if slot in PRODUCTS:
            s = slug(slot)
            if levels[f"{s}_deploy"] != 1.0:
                return None
            amount_kw = self._amount_kw(slot, levels[f"{s}_deploy_mw"] * 1000.0)
            return None if amount_kw is None else Want("reduce", amount_kw, PRODUCT_PROGRAMS[slot])
        if slot == "base_point":
            on = levels["base_point_on"] == 1.0
            return Want("base_point", levels["base_point_set_mw"] * 1000.0, "CLR") if on else None
        if slot == "import_limit":
            on = levels["import_limit_on"] == 1.0
            return Want("limit", levels["import_limit_set_mw"] * 1000.0, "generic") if on else None
        limit_kw = self.settings.fail_safe_limit_kw
        if slot == "fail_safe" and self.state == "lost" and self.settings.fail_safe == "limit":
            assert limit_kw is not None
            return Want("limit", limit_kw, "generic")
        return None

    def want(self, slot: str) -> Want | None:
        """What the link should hold for `slot` now: the levels' ask, except that test mode actuates
        nothing new and a lost link applies nothing that adds load."""
        asked = self.asked(slot)
        held = self.held.get(slot)
        if slot == "fail_safe":
            # Held until the link is seen up: a takeover or restart starts "waiting", not "up".
            return held.want if held is not None and self.state == "waiting" else asked
        if self.levels["test_mode"] == 1.0 and asked is not None:
            return held.want if held is not None else None
        if self.state == "lost" and held is not None and _adds_load(asked, held.want):
            return held.want
        return asked

    def slot_state(self, slot: str) -> SlotState:
        asked, held = self.asked(slot), self.held.get(slot)
        refused = self.refused.get(slot)
        if asked is not None and refused is not None and refused[0] == asked and held is None:
            return "refused"
        if held is not None:
            if asked is None or asked != held.want:
                return "held" if self.state == "lost" else "deploying"
            return "deployed"
        if asked is not None:
            return "test" if self.levels["test_mode"] == 1.0 else "deploying"
        return "clear"

    def refusal(self, slot: str) -> str | None:
        refused = self.refused.get(slot)
        return None if refused is None or refused[0] != self.asked(slot) else refused[1]

    # ---- closing the gap ---------------------------------------------------------------------

    def next_action(self, book: Mapping[str, Obligation], now_s: float, now_mono_s: float) -> Action | None:
        """The next grid event that brings `book` (the obligations by id) to what the link wants, or
        None when it is there."""
        orphan = self._orphans(book)
        if orphan is not None:
            return orphan
        for slot in SLOTS:
            held = self.held.get(slot)
            if held is not None and held.event_id not in book:
                del self.held[slot]  # superseded, or ended otherwise
                held = None
            want = self.want(slot)
            if want is None:
                if held is not None:
                    event = GridEvent(id=held.event_id, kind="cancel", source="qse")
                    return Action(slot, event, None)
                continue
            if held is not None and held.want == want:
                continue
            refused = self.refused.get(slot)
            if refused is not None and refused[0] == want:
                if refused[1] not in TRANSIENT_CODES or now_mono_s - refused[2] < RETRY_S:
                    continue
            event = GridEvent(
                id=self._new_id(slot, now_s),
                kind=want.kind,
                kw=want.kw,
                program=want.program,
                source="qse",
            )
            return Action(slot, event, want, held.event_id if held is not None else None)
        return None

    def _orphans(self, book: Mapping[str, Obligation]) -> Action | None:
        """QSE obligations in the book the link does not hold (a takeover's book, a journal without
        the levels) are taken as asserted, never read as a recall; a second one for a held slot (a
        replacement whose cancel failed) is cancelled."""
        held_ids = {h.event_id for h in self.held.values()}
        for event_id, obligation in book.items():
            slot = slot_of_event(event_id)
            if (
                slot is None
                or event_id in held_ids
                or obligation.kind not in ("limit", "reduce", "base_point")
            ):
                continue
            if slot in self.held:
                return Action(slot, GridEvent(id=event_id, kind="cancel", source="qse"), None, orphan=True)
            want = Want(obligation.kind, obligation.kw, obligation.program)
            self.held[slot] = Held(event_id, want)
            self._assert(slot, want)
        return None

    def _assert(self, slot: str, want: Want) -> None:
        """Set the levels that ask for `want` (an adopted obligation)."""
        if slot in PRODUCTS:
            self.levels[f"{slug(slot)}_deploy"] = 1.0
            self.levels[f"{slug(slot)}_deploy_mw"] = want.kw / 1000.0
        elif slot in ("base_point", "import_limit"):
            self.levels[f"{slot}_set_mw"] = want.kw / 1000.0
            self.levels[f"{slot}_on"] = 1.0

    def outcome(self, action: Action, accepted: bool, code: str, now_mono_s: float) -> None:
        """The book's answer to `action`'s event."""
        if action.orphan:
            return
        slot = action.slot
        if self.command.slot == slot and self.command.result == 1:
            result = 2 if accepted else 3
            self.command = Command(self.command.count, self.command.address, self.command.value, slot, result)
        if action.want is None:  # a recall
            if accepted:
                self.held.pop(slot, None)
            return
        if accepted:
            self.held[slot] = Held(action.event.id, action.want)
            self.refused.pop(slot, None)
        else:
            self.refused[slot] = (action.want, code, now_mono_s)

    def adopt(self, levels: Mapping[str, float], held: Mapping[str, Held]) -> None:
        """What a restarted daemon recovers: the last journaled levels and the QSE's obligations."""
        self.levels.update({k: float(v) for k, v in levels.items() if k in self.levels})
        self.held.update(held)

    def _new_id(self, slot: str, now_s: float) -> str:
        stamp_ms = max(int(now_s * 1000), self._last_id_ms + 1)
        self._last_id_ms = stamp_ms
        return f"{ID_PREFIX}{_id_name(slot)}:{stamp_ms}"


def slot_of_event(event_id: str) -> str | None:
    """The slot a QSE event id belongs to (`qse:<slot>:<ms>`), None for any other id."""
    if not event_id.startswith(ID_PREFIX):
        return None
    name = event_id[len(ID_PREFIX) :].rsplit(":", 1)[0]
    return next((slot for slot in SLOTS if _id_name(slot) == name), None)


def _id_name(slot: str) -> str:
    return slot.lower().replace("-", "").replace("_", "")  # event ids take no "_"


def _slot_of(point: str) -> str | None:
    for product in PRODUCTS:
        if point.startswith(slug(product) + "_"):
            return product
    for slot in ("base_point", "import_limit"):
        if point.startswith(slot):
            return slot
    return None


def _adds_load(asked: Want | None, held: Want) -> bool:
    """Whether moving from `held` to `asked` would let the site draw more."""
    if asked is None:
        return True
    if asked.kind != held.kind:
        return True
    if asked.kind == "reduce":
        return asked.kw < held.kw
    return asked.kw > held.kw
