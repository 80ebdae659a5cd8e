"""The standby's warm copy of what the leader commands, read from MQTT (docs/fleet.md section 6).

A standby plans nothing and sends nothing; it watches the site's broker so that a takeover starts from
where the leader was, not from scratch:

- the retained `mining/<group>/set` and `ai/<tenant>/set`: the last setpoint per group and tenant (the
  new leader re-issues them under its epoch, keeps min on/off times from their `ts`, and numbers its
  commands above the highest `seq` seen);
- the retained `daemon/handover` the leader publishes before each grid-event ack and after each cycle
  that changes it: its obligation book (with each obligation's event, so a sender's retry is a
  duplicate), cancelled ids, latched under-frequency stages, hard-cut groups, the restore ramp
  ledger and operator overrides. It comes from the leader's book, so it covers events from every
  transport (MQTT, HTTP, OpenADR), and it is on the broker before the sender sees the ack;
- MQTT `grid/event`s the leader has not acked yet: handed to the new leader's queue at takeover, so
  an event in flight when the leader died is decided rather than lost.

The handover document is this module's to build and read (`handover_document`, `Handover.parse`), so
the two sides cannot drift apart.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from mullet.drivers.wire import GridEvent, GroupSetpoint, TenantSetpoint, WireError, loads
from mullet.policies.model import Obligation, Override

# The book, bounded by control.max_obligations and the cancelled history (policies/obligations.py).
HANDOVER_MAX_BYTES = 16 << 20

# MQTT grid events kept for a takeover while unacked: bounded, and only recent ones (a sender whose
# event is older has retried or given up; a retry is a duplicate or decided afresh anyway).
PENDING_EVENTS_MAX = 1000
PENDING_EVENT_MAX_AGE_S = 30.0


@dataclass(frozen=True, slots=True)
class Handover:
    """What the leader hands a standby beyond the retained setpoints."""

    node_id: str
    epoch: int
    seq: int
    obligations: tuple[tuple[GridEvent | None, Obligation], ...] = ()  # event None: an `ufr-` hold
    cancelled: frozenset[str] = frozenset()
    latched_stages: frozenset[int] = frozenset()
    hard_cut: frozenset[str] = frozenset()
    restores: tuple[tuple[float, float], ...] = ()
    overrides: tuple[Override, ...] = ()

    @classmethod
    def parse(cls, raw: bytes) -> Handover:
        """Validate a `daemon/handover` payload; WireError (bounded reason) when it does not."""
        try:
            data = loads(raw, max_bytes=HANDOVER_MAX_BYTES)
            if not isinstance(data, dict) or data.get("v") != 1:
                raise WireError("bad_version", "handover must be a v1 object")
            obligations = []
            for item in data["obligations"]:
                event = None if item["event"] is None else GridEvent.model_validate(item["event"])
                obligations.append((event, Obligation(**item["obligation"])))
            return cls(
                node_id=str(data["node_id"]),
                epoch=int(data["epoch"]),
                seq=int(data["seq"]),
                obligations=tuple(obligations),
                cancelled=frozenset(str(i) for i in data["cancelled"]),
                latched_stages=frozenset(int(s) for s in data["latched_stages"]),
                hard_cut=frozenset(str(g) for g in data["hard_cut"]),
                restores=tuple((float(t), float(kw)) for t, kw in data["restores"]),
                overrides=tuple(
                    Override(str(o["group_id"]), o["mode"], float(o["until"]), str(o["note"]))
                    for o in data["overrides"]
                ),
            )
        except WireError:
            raise
        except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise WireError("invalid_field", f"handover: {type(exc).__name__}: {exc}"[:300]) from None


def handover_document(handover: Handover) -> dict[str, Any]:
    """The JSON body of `daemon/handover` (without `ts`, so an unchanged one compares equal)."""
    return {
        "v": 1,
        "node_id": handover.node_id,
        "epoch": handover.epoch,
        "seq": handover.seq,
        "obligations": [
            {"event": None if e is None else e.model_dump(), "obligation": asdict(o)}
            for e, o in handover.obligations
        ],
        "cancelled": sorted(handover.cancelled),
        "latched_stages": sorted(handover.latched_stages),
        "hard_cut": sorted(handover.hard_cut),
        "restores": [list(r) for r in handover.restores],
        "overrides": [
            {"group_id": o.group_id, "mode": o.mode, "until": o.until_s, "note": o.note}
            for o in handover.overrides
        ],
    }


@dataclass
class WarmCopy:
    """The leader's commands as seen on the broker; fed by the daemon's MQTT handler."""

    setpoints: dict[str, GroupSetpoint] = field(default_factory=dict)
    tenant_setpoints: dict[str, TenantSetpoint] = field(default_factory=dict)
    handover: Handover | None = None
    # MQTT grid events not yet acked by anyone, in arrival order: id -> (event, arrival monotonic s)
    pending_events: OrderedDict[str, tuple[GridEvent, float]] = field(default_factory=OrderedDict)
    highest_epoch: int = 0

    @property
    def max_seq(self) -> int:
        """The highest command `seq` seen on the broker (setpoints, tenant caps, the handover)."""
        seqs = [sp.seq for sp in self.setpoints.values()]
        seqs += [sp.seq for sp in self.tenant_setpoints.values()]
        if self.handover is not None:
            seqs.append(self.handover.seq)
        return max(seqs, default=0)

    def on_setpoint(self, group_id: str, setpoint: GroupSetpoint) -> None:
        # A lower epoch than seen is a deposed leader's: controllers ignore it, so do we.
        if setpoint.epoch is not None and setpoint.epoch < self.highest_epoch:
            return
        self.highest_epoch = max(self.highest_epoch, setpoint.epoch or 0)
        self.setpoints[group_id] = setpoint

    def on_tenant_setpoint(self, tenant_id: str, setpoint: TenantSetpoint) -> None:
        self.tenant_setpoints[tenant_id] = setpoint

    def on_handover(self, handover: Handover) -> None:
        if self.handover is not None and handover.epoch < self.handover.epoch:
            return
        self.highest_epoch = max(self.highest_epoch, handover.epoch)
        self.handover = handover

    def on_grid_event(self, event: GridEvent, now_mono_s: float) -> None:
        self.pending_events[event.id] = (event, now_mono_s)
        self.pending_events.move_to_end(event.id)
        while len(self.pending_events) > PENDING_EVENTS_MAX:
            self.pending_events.popitem(last=False)

    def on_ack(self, event_id: str) -> None:
        self.pending_events.pop(event_id, None)

    def unacked_events(self, now_mono_s: float | None = None) -> list[GridEvent]:
        """Recent MQTT events nobody acked, oldest first: the new leader decides them."""
        now_mono_s = time.monotonic() if now_mono_s is None else now_mono_s
        return [e for e, at in self.pending_events.values() if now_mono_s - at <= PENDING_EVENT_MAX_AGE_S]
