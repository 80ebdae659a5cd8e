"""Simulated mining groups: ramp physics (`MiningGroup`) and the group controller on MQTT
(`MiningController`).

Ramp shape: linear at a fixed rate, `rated_kw / curtail_s` down and `rated_kw / resume_s` up, so a
full curtail from rated reaches the sleep draw in slightly under `curtail_s` and a resume from sleep
(or a cold start from 0) reaches rated within `resume_s`; partial moves take proportionally less.
That matches the vendor claims the design rests on (~2 % within ~5 s, full power within ~10 s).

A PDU cut is a hard cut: power drops to 0 at once and the miners go offline. When power returns the
group cold-starts from 0 up to whatever its last command asks for (rated, a partial target, or the
sleep draw), at the resume rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from mullet.drivers.device_link import Broker, DeviceLink
from mullet.drivers.group_command import GroupCommand
from mullet.drivers.protocol import GroupSetpoint, GroupState, Topics, Trip, WireError, decode, encode

GroupMode = Literal["run", "curtail", "ramping"]
MINER_KW = 3.5  # one ASIC (Antminer S21 class); only used to turn rated kW into a miner count
_SETTLED_KW = 1e-6


@dataclass(frozen=True, slots=True)
class SimGroupSpec:
    """One simulated group: its miners, and the PDU outlets feeding them (`(pdu_id, outlet)`; the group
    has power only while all of them are on)."""

    group_id: str
    rated_kw: float
    efficiency_j_per_th: float
    supports_power_target: bool = False
    sleep_kw: float | None = None  # None: `sleep_fraction` of rated
    outlets: tuple[tuple[str, int], ...] = ()


class MiningGroup:
    """Ground truth for one group: what its miners draw, whatever its controller reports."""

    def __init__(
        self,
        spec: SimGroupSpec,
        *,
        sleep_fraction: float = 0.02,
        curtail_s: float = 5.0,
        resume_s: float = 10.0,
    ) -> None:
        self.group_id = spec.group_id
        self.rated_kw = spec.rated_kw
        self.efficiency_j_per_th = spec.efficiency_j_per_th
        self.supports_power_target = spec.supports_power_target
        self.sleep_kw = spec.sleep_kw if spec.sleep_kw is not None else spec.rated_kw * sleep_fraction
        self.miners = max(1, round(spec.rated_kw / MINER_KW))
        self.down_kw_per_s = spec.rated_kw / curtail_s
        self.up_kw_per_s = spec.rated_kw / resume_s
        self.power_kw = spec.rated_kw
        self.target_kw = spec.rated_kw
        self.commanded: Literal["run", "curtail"] = "run"
        self.command = GroupCommand()  # seq and trip rules shared with the ASIC agent
        self.powered = True
        # Fault switch: firmware acknowledges commands but the power does not move (PDU cuts still do).
        self.stuck = False
        self._booting = False

    @property
    def seq_applied(self) -> int | None:
        return self.command.seq_applied

    @property
    def trip_stage(self) -> int | None:
        return self.command.trip_stage

    @property
    def mode(self) -> GroupMode:
        if not self.powered:
            return "curtail"
        if abs(self.power_kw - self.target_kw) > _SETTLED_KW:
            return "ramping"
        return self.commanded

    @property
    def hashrate_ths(self) -> float:
        return self.power_kw * 1000.0 / self.efficiency_j_per_th

    @property
    def miners_online(self) -> int:
        if not self.powered:
            return 0
        if self._booting and self.target_kw > 0:
            return min(self.miners, int(self.miners * self.power_kw / self.target_kw))
        return self.miners

    def apply(self, setpoint: GroupSetpoint) -> bool:
        """Take a setpoint; False when its seq is the one already applied (a retained, QoS 1 or
        reconnect redelivery: the daemon never reuses a seq), which must not undo a trip since."""
        if not self.command.apply(setpoint):
            return False
        self.commanded = setpoint.mode
        if setpoint.mode == "curtail":
            self.target_kw = self.sleep_kw
        elif setpoint.power_kw is not None and self.supports_power_target:
            self.target_kw = min(max(setpoint.power_kw, self.sleep_kw), self.rated_kw)
        else:
            self.target_kw = self.rated_kw
        return True

    def trip(self, stage: int, epoch: int | None = None) -> bool:
        """Shed at once if armed at `stage` or below, unless fenced by `epoch`; True if it was armed."""
        if not self.command.trip(stage, epoch):
            return False
        self.commanded = "curtail"
        self.target_kw = self.sleep_kw
        return True

    def set_powered(self, on: bool) -> None:
        if on == self.powered:
            return
        self.powered = on
        if not on:
            self.power_kw = 0.0
        self._booting = on

    def advance(self, dt_s: float) -> None:
        if not self.powered or self.stuck or dt_s <= 0:
            return
        gap_kw = self.target_kw - self.power_kw
        if gap_kw > 0:
            self.power_kw = min(self.target_kw, self.power_kw + self.up_kw_per_s * dt_s)
        elif gap_kw < 0:
            self.power_kw = max(self.target_kw, self.power_kw - self.down_kw_per_s * dt_s)
        if self._booting and self.power_kw >= self.target_kw:
            self._booting = False

    def state(self, ts: float) -> GroupState:
        return GroupState(
            seq_applied=self.seq_applied,
            mode=self.mode,
            power_kw=self.power_kw,
            hashrate_ths=self.hashrate_ths,
            miners_online=self.miners_online,
            ts=ts,
        )


class MiningController(DeviceLink):
    """The group's controller: applies `mining/<group>/set`, sheds on `mining/trip`, reports
    `mining/<group>/state` on a period and at once after every applied setpoint or trip."""

    def __init__(
        self, group: MiningGroup, topics: Topics, broker: Broker, *, telemetry_period_s: float
    ) -> None:
        gid = group.group_id
        super().__init__(
            broker,
            name=f"mining-{gid}",
            online_topic=topics.group_online(gid),
            subscriptions=[topics.group_set(gid), topics.trip],
            telemetry_period_s=telemetry_period_s,
        )
        self.group = group
        self.setpoints_applied = 0
        self.invalid_setpoints = 0
        self.trips_received = 0
        self.invalid_trips = 0
        self._set_topic = topics.group_set(gid)
        self._state_topic = topics.group_state(gid)
        self._trip_topic = topics.trip

    def _state(self) -> tuple[str, bytes]:
        return self._state_topic, encode(self.group.state(time.time()))

    async def _handle(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a retained message being cleared, not a command
        if topic == self._set_topic:
            try:
                setpoint = decode(GroupSetpoint, payload)
            except WireError as exc:
                self.invalid_setpoints += 1
                self._log.warning("invalid setpoint", reason=exc.reason, detail=exc.detail)
                return
            if self.group.apply(setpoint):
                self.setpoints_applied += 1
            await self.publish_state()
        elif topic == self._trip_topic:
            try:
                trip = decode(Trip, payload)
            except WireError as exc:
                self.invalid_trips += 1
                self._log.warning("invalid trip", reason=exc.reason, detail=exc.detail)
                return
            self.trips_received += 1
            if self.group.trip(trip.stage, trip.epoch):
                await self.publish_state()
