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

The handover document itself is daemon/core/handover.py's to build and read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from mullet.daemon.core.handover import Handover
from mullet.drivers.protocol import GridEvent, GroupSetpoint, TenantSetpoint

# MQTT grid events kept for a takeover while unacked: bounded, and only recent ones (a sender whose
# event is older has retried or given up; a retry is a duplicate or decided afresh anyway).
PENDING_EVENTS_MAX = 1000
PENDING_EVENT_MAX_AGE_S = 30.0


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
