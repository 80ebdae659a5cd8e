"""Grid-event acceptance: which events a site takes on, and the book of the obligations it holds.

The rules (reserved ids, armed stages, duplicates, cancels, id conflicts, the bound on obligations
held, kW sanity, windows, program limits and actuation) are the site daemon's; the fleet dispatcher
uses the same duplicate, conflict, cancel and reserved-id rules for its portfolio events. Deciding
changes nothing: the caller makes a decision durable (journal) first, then `apply`s it. Every refusal
carries a `code` from `REJECTION_CODES`, a bounded metric label that the ack repeats, and a `reason`
for people.

Events are anything shaped like a grid event (`GridRequest`): the wire model satisfies it as is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from mullet.policies.model import Obligation
from mullet.policies.programs import (
    CATALOGUE,
    Program,
    choose_actuation,
    duration_problem,
    fast_path_stage,
    resolve,
)
from mullet.policies.trigger import UFR_PREFIX, is_ufr_obligation

# Every code a refusal may carry (the metric label set is this, plus the wire reasons of
# drivers/protocol.py and the transport refusals below); docs/protocol.md section 6.
REJECTION_CODES = (
    "reserved_id",
    "unknown_stage",
    "kw_missing",
    "kw_negative",
    "kw_absurd",
    "end_in_past",
    "end_before_start",
    "duration_exceeds_program",
    "no_fast_path",
    "no_baseline",
    "unknown_event",
    "id_conflict",
    "too_many_obligations",
    "journal_unavailable",
    "queue_full",
    "timeout",
    "unauthorized",
    "not_splittable",
)

# Ended and cancelled events are remembered this long (and at most this many), so that a sender's retry
# or a QoS 1 redelivery of an old event or cancel is answered `duplicate` and never reinstates it.
HISTORY_S = 86_400.0
HISTORY_MAX = 10_000
DEFAULT_MAX_OBLIGATIONS = 100


class GridRequest(Protocol):
    """What the rules read of a grid event (drivers/protocol.py's `GridEvent` is one). Equality is the
    event's: a re-sent event equal to the accepted one is a duplicate, a different one a conflict."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> Literal["limit", "reduce", "base_point", "cancel"]: ...
    @property
    def kw(self) -> float | None: ...
    @property
    def start(self) -> float | None: ...
    @property
    def end(self) -> float | None: ...
    @property
    def program(self) -> str: ...
    @property
    def allow_ai_flex(self) -> bool: ...
    @property
    def trip_stage(self) -> int | None: ...


E = TypeVar("E", bound=GridRequest)


@dataclass(frozen=True, slots=True)
class Decision:
    accepted: bool
    reason: str
    code: str = "accepted"  # on a refusal: one of REJECTION_CODES or a wire reason
    obligation: Obligation | None = None  # for limit/reduce: the obligation to add
    cancels: str | None = None  # for cancel: the event id it ends
    duplicate: bool = False
    # Immediate deployment: the armed stage to fire on the fast path before the journal write.
    fire_stage: int | None = None


def rejected(code: str, reason: str) -> Decision:
    return Decision(False, reason, code)


# ---- the rules the site and the fleet share ---------------------------------------------------


def reserved_id(event_id: str) -> Decision | None:
    """The refusal of an id in the under-frequency holds' namespace, or None."""
    if is_ufr_obligation(event_id):
        return rejected(
            "reserved_id", f"ids starting with {UFR_PREFIX!r} are reserved for under-frequency holds"
        )
    return None


def cancel_decision(event_id: str, *, held: bool, cancelled: bool) -> Decision:
    """A cancel of `event_id`: it ends what is `held`; a cancel of one already `cancelled` is a
    duplicate (a retry); anything else is unknown."""
    if held:
        return Decision(True, f"cancelled {event_id}", "cancelled", cancels=event_id)
    if cancelled:
        return Decision(True, "duplicate: already cancelled", "duplicate", duplicate=True)
    return rejected("unknown_event", f"cancel of unknown event {event_id!r}")


def repeat_decision(event: GridRequest, previous: GridRequest | None) -> Decision | None:
    """An event whose id was accepted before (`previous`): the same event again is a duplicate, a
    different one an id conflict. None when the id is new."""
    if previous is None:
        return None
    if previous == event:
        return Decision(True, "duplicate: already accepted", "duplicate", duplicate=True)
    return rejected("id_conflict", f"id {event.id!r} already used by a different event")


# ---- the site's book ---------------------------------------------------------------------------


class ObligationBook(Generic[E]):
    """The obligations a site holds (grid events and under-frequency holds), the accepted events
    behind them, and a bounded history of what ended or was cancelled."""

    def __init__(
        self,
        *,
        interconnect_kw: float,
        max_event_kw_factor: float,
        stages: Mapping[int, float] | None = None,
        programs: Mapping[str, Program] = CATALOGUE,
        firmware_sleep_s: float = 5.0,
        max_obligations: int = DEFAULT_MAX_OBLIGATIONS,
        history_s: float = HISTORY_S,
        history_max: int = HISTORY_MAX,
    ) -> None:
        self.max_kw = interconnect_kw * max_event_kw_factor
        # Grid obligations held at once (pending or in force; under-frequency holds not counted).
        self.max_obligations = max_obligations
        self.history_s = history_s
        self.history_max = history_max
        self.stages = dict(stages or {})  # armed stage -> threshold Hz
        self.programs = programs
        self.firmware_sleep_s = firmware_sleep_s
        self.obligations: dict[str, Obligation] = {}
        self.cancelled: set[str] = set()
        self._events: dict[str, E] = {}
        # Ended or cancelled event id -> when (Unix s), oldest first: what prune() forgets.
        self._ended: OrderedDict[str, float] = OrderedDict()

    def event(self, event_id: str) -> E | None:
        """The accepted event behind `event_id` (held, or ended and still remembered); None for an
        under-frequency hold or an id the book does not know."""
        return self._events.get(event_id)

    def decide(self, event: E, *, now_s: float, site_power_kw: float | None) -> Decision:
        """Whether to accept `event`; pure with respect to the book (nothing changes here)."""
        reserved = reserved_id(event.id)
        if reserved is not None:
            return reserved
        if event.trip_stage is not None and event.trip_stage not in self.stages:
            return rejected(
                "unknown_stage", f"trip_stage {event.trip_stage} is not an armed stage of this site"
            )
        if event.kind == "cancel":
            return cancel_decision(
                event.id, held=event.id in self.obligations, cancelled=event.id in self.cancelled
            )
        repeat = repeat_decision(event, self._events.get(event.id))
        if repeat is not None:
            return repeat
        held = self.grid_obligations()
        if held >= self.max_obligations:
            return rejected(
                "too_many_obligations",
                f"{held} obligations pending or in force, the most this site takes"
                f" (control.max_obligations); cancel one first",
            )
        if event.kw is None:
            return rejected("kw_missing", f"kw is required for {event.kind}")
        if event.kw < 0:
            return rejected("kw_negative", f"kw must be >= 0, got {event.kw:g}")
        if event.kw > self.max_kw:
            return rejected("kw_absurd", f"kw {event.kw:g} is absurd for this site (max {self.max_kw:g})")
        start_s = event.start if event.start is not None else now_s
        if event.end is not None:
            if event.end <= now_s:
                return rejected("end_in_past", "end is in the past")
            if event.end <= start_s:
                return rejected("end_before_start", "end must be after start")
        program, note = resolve(event.program, self.programs)
        problem = duration_problem(program, start_s, event.end)
        if problem is not None:
            return rejected("duration_exceeds_program", problem)
        actuation = choose_actuation(program, self.firmware_sleep_s)
        fire_stage = event.trip_stage
        if event.kind == "base_point" and (fire_stage is not None or actuation.path == "fast_path"):
            # A base point sets the mining budget the control loop follows: it fires no trip stage.
            return rejected(
                "no_fast_path",
                f"a base_point is followed by the control loop; {program.name} needs the fast path"
                if fire_stage is None
                else f"a base_point fires no trip stage (got {fire_stage})",
            )
        if fire_stage is None and actuation.path == "fast_path":
            fire_stage = fast_path_stage(program, self.stages)
            if fire_stage is None:
                return rejected(
                    "no_fast_path",
                    f"{program.name} needs the fast path ({actuation.reason})"
                    " and this site arms no trip stage",
                )
        baseline_kw: float | None = None
        if event.kind == "reduce":
            # The baseline is fixed when the obligation is accepted; without a live meter there is none.
            if site_power_kw is None:
                return rejected("no_baseline", "cannot fix a baseline: site meter reading unknown")
            baseline_kw = site_power_kw
        actuation_reason = (
            actuation.reason if fire_stage is None else f"{actuation.reason}, stage {fire_stage}"
        )
        obligation = Obligation(
            event_id=event.id,
            kind=event.kind,
            kw=event.kw,
            start_s=start_s,
            end_s=event.end,
            baseline_kw=baseline_kw,
            program=event.program,
            allows_ai_flex=event.allow_ai_flex and event.kind != "base_point",  # a base point never caps AI
            deadline_s=program.deadline_s,
            actuation="fast_path" if fire_stage is not None else actuation.path,
            actuation_reason=actuation_reason + (f"; {note}" if note else ""),
            explicit_recall=program.recall == "explicit",
        )
        return Decision(True, "accepted", obligation=obligation, fire_stage=fire_stage)

    def grid_obligations(self) -> int:
        """Grid obligations pending or in force (what max_obligations bounds)."""
        return sum(1 for event_id in self.obligations if not is_ufr_obligation(event_id))

    def apply(self, event: E, decision: Decision, now_s: float) -> list[str]:
        """Record an accepted decision (after it is durable, or replayed from the journal) at `now_s`,
        the time it was journaled. A base point supersedes every other base point held: they end (in
        the history, as a cancel, but not `cancelled`). Returns the ids it ended that way."""
        if not decision.accepted or decision.duplicate:
            return []
        if decision.cancels is not None:
            self.obligations.pop(decision.cancels, None)
            self.cancelled.add(decision.cancels)
            self._ended_at(decision.cancels, now_s)
            return []
        superseded: list[str] = []
        obligation = decision.obligation
        if obligation is not None:
            if obligation.kind == "base_point":
                superseded = [
                    i for i, o in self.obligations.items() if o.kind == "base_point" and i != event.id
                ]
                for event_id in superseded:
                    del self.obligations[event_id]
                    self._ended_at(event_id, now_s)
            self.obligations[event.id] = obligation
            self._events[event.id] = event
        return superseded

    def expire(self, now_s: float) -> list[str]:
        """End the obligations whose end has passed; those that wait for a recall (ERS) stay. Also
        forgets what ended or was cancelled longer ago than the history keeps."""
        ended = [
            i
            for i, o in self.obligations.items()
            if o.end_s is not None and o.end_s <= now_s and not o.explicit_recall
        ]
        for event_id in ended:
            del self.obligations[event_id]
            self._ended_at(event_id, now_s)
        self.prune(now_s)
        return ended

    def _ended_at(self, event_id: str, when_s: float) -> None:
        self._ended.pop(event_id, None)
        self._ended[event_id] = when_s

    def prune(self, now_s: float) -> int:
        """Forget ended and cancelled events beyond the history's age and count; returns how many."""
        forgotten = 0
        while self._ended:
            event_id, ended_s = next(iter(self._ended.items()))
            if len(self._ended) <= self.history_max and ended_s > now_s - self.history_s:
                break
            del self._ended[event_id]
            self.cancelled.discard(event_id)
            if event_id not in self.obligations:
                self._events.pop(event_id, None)
            forgotten += 1
        return forgotten

    def history(self) -> int:
        """Ended and cancelled events still remembered."""
        return len(self._ended)

    def active(self, now_s: float) -> list[Obligation]:
        return [o for o in self.obligations.values() if o.active(now_s)]
