"""What a mining-group controller was told last, by protocol v1's rules (docs/protocol.md 3.1-3.2).

Shared by the simulated controllers (`simulators/mining.py`) and the ASIC agent
(`daemon/agents/asic.py`), so both follow `set` and `trip` the same way (`EpochFence` also by the AI
tenant controllers, `simulators/ai.py` and `daemon/agents/gpu.py`):

- a setpoint whose `seq` is the one already applied is a redelivery (retained, QoS 1, or the daemon's
  byte-for-byte republish after a reconnect) and is ignored, so it cannot undo a trip since;
- a trip sheds the group when it is armed at a stage `<=` the trip's stage, and leaves `seq_applied`
  alone;
- fencing (active/standby daemons, docs/protocol.md): a setpoint or trip carrying a leader `epoch` lower
  than the highest one seen is ignored, so a deposed leader's late command cannot undo the new
  leader's. A command without an epoch (a daemon without a leader lease) is not fenced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mullet.drivers.protocol import GroupSetpoint

CommandMode = Literal["run", "curtail"]


@dataclass(slots=True)
class EpochFence:
    """The highest leader epoch a controller has seen (mining groups and AI tenants alike)."""

    epoch: int | None = None
    fenced: int = 0  # commands ignored for a lower epoch

    def refuses(self, epoch: int | None) -> bool:
        """True when a command of `epoch` must be ignored; otherwise remember the highest epoch."""
        if epoch is None:
            return False
        if self.epoch is not None and epoch < self.epoch:
            self.fenced += 1
            return True
        self.epoch = epoch
        return False


@dataclass(slots=True)
class GroupCommand:
    """The controller's current command; `mode` None means none received yet."""

    seq_applied: int | None = None
    mode: CommandMode | None = None
    power_kw: float | None = None
    trip_stage: int | None = None
    fence: EpochFence = field(default_factory=EpochFence)

    @property
    def epoch(self) -> int | None:
        return self.fence.epoch

    @property
    def fenced(self) -> int:
        return self.fence.fenced

    def _fence(self, epoch: int | None) -> bool:
        return self.fence.refuses(epoch)

    def apply(self, setpoint: GroupSetpoint) -> bool:
        """Take a setpoint; False (and no change) for a redelivery of the one already applied, or for a
        setpoint from a deposed leader (a lower epoch)."""
        if setpoint.seq == self.seq_applied or self._fence(setpoint.epoch):
            return False
        self.seq_applied = setpoint.seq
        self.mode = setpoint.mode
        self.power_kw = setpoint.power_kw if setpoint.mode == "run" else None
        self.trip_stage = setpoint.trip_stage
        return True

    def trip(self, stage: int, epoch: int | None = None) -> bool:
        """Shed if armed at `stage` or below; True when this group was armed. A trip from a lower epoch
        than the highest seen is ignored."""
        if self._fence(epoch) or self.trip_stage is None or self.trip_stage > stage:
            return False
        self.mode = "curtail"
        self.power_kw = None
        return True
