"""Grid events: validation against the site, and the book of accepted obligations.

Validation happens before anything is journaled or acknowledged; the book changes only after the
journal has the event on disk (see Daemon._handle_grid_event).
"""

from __future__ import annotations

from dataclasses import dataclass

from mullet.drivers.wire import GridEvent
from mullet.policies.model import Obligation


@dataclass(frozen=True, slots=True)
class Decision:
    accepted: bool
    reason: str
    obligation: Obligation | None = None  # for limit/reduce: the obligation to add
    cancels: str | None = None  # for cancel: the event id it ends
    duplicate: bool = False


class ObligationBook:
    def __init__(self, *, interconnect_kw: float, max_event_kw_factor: float) -> None:
        self.max_kw = interconnect_kw * max_event_kw_factor
        self.obligations: dict[str, Obligation] = {}
        self.cancelled: set[str] = set()
        self._events: dict[str, GridEvent] = {}

    def decide(self, event: GridEvent, *, now_s: float, site_power_kw: float | None) -> Decision:
        """Whether to accept `event`; pure with respect to the book (nothing changes here)."""
        if event.kind == "cancel":
            if event.id in self.obligations:
                return Decision(True, f"cancelled {event.id}", cancels=event.id)
            if event.id in self.cancelled:
                return Decision(True, "duplicate: already cancelled", duplicate=True)
            return Decision(False, f"cancel of unknown event {event.id!r}")
        previous = self._events.get(event.id)
        if previous is not None:
            if previous == event:
                return Decision(True, "duplicate: already accepted", duplicate=True)
            return Decision(False, f"id {event.id!r} already used by a different event")
        if event.kw is None:
            return Decision(False, f"kw is required for {event.kind}")
        if event.kw < 0:
            return Decision(False, f"kw must be >= 0, got {event.kw:g}")
        if event.kw > self.max_kw:
            return Decision(False, f"kw {event.kw:g} is absurd for this site (max {self.max_kw:g})")
        start_s = event.start if event.start is not None else now_s
        if event.end is not None:
            if event.end <= now_s:
                return Decision(False, "end is in the past")
            if event.end <= start_s:
                return Decision(False, "end must be after start")
        baseline_kw: float | None = None
        if event.kind == "reduce":
            # The baseline is fixed when the obligation is accepted; without a live meter there is none.
            if site_power_kw is None:
                return Decision(False, "cannot fix a baseline: site meter reading unknown")
            baseline_kw = site_power_kw
        obligation = Obligation(
            event_id=event.id,
            kind=event.kind,
            kw=event.kw,
            start_s=start_s,
            end_s=event.end,
            baseline_kw=baseline_kw,
            program=event.program,
            allows_ai_flex=event.allow_ai_flex,
        )
        return Decision(True, "accepted", obligation=obligation)

    def apply(self, event: GridEvent, decision: Decision) -> None:
        """Record an accepted decision (after it is durable, or replayed from the journal)."""
        if not decision.accepted or decision.duplicate:
            return
        if decision.cancels is not None:
            self.obligations.pop(decision.cancels, None)
            self.cancelled.add(decision.cancels)
            return
        if decision.obligation is not None:
            self.obligations[event.id] = decision.obligation
            self._events[event.id] = event

    def expire(self, now_s: float) -> list[str]:
        ended = [i for i, o in self.obligations.items() if o.end_s is not None and o.end_s <= now_s]
        for event_id in ended:
            del self.obligations[event_id]
        return ended

    def active(self, now_s: float) -> list[Obligation]:
        return [o for o in self.obligations.values() if o.active(now_s)]
