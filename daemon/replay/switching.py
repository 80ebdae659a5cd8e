"""What each mining group did for the site, per group: wakes, sleeps and power-target changes, the
minimum on/off times it was switched inside of, and the hashrate it gave up (TH x h below its rated
hashrate), for weighing an absorber's steadier import against its wear and lost mining."""

from __future__ import annotations

from dataclasses import dataclass

from mullet.policies.model import NEVER

_EPS_KW = 1e-6
_EPS_S = 1e-9


@dataclass
class GroupSwitching:
    """One group's counts; `mode` is what it is commanded to (a cut outlet counts as off)."""

    min_on_s: float
    min_off_s: float
    mode: str = "run"
    target_kw: float | None = None
    since_s: float = NEVER
    wakes: int = 0
    sleeps: int = 0
    target_changes: int = 0
    min_on_violations: int = 0
    min_off_violations: int = 0
    given_up_thh: float = 0.0  # TH x h below the rated hashrate

    def observe(self, t_s: float, mode: str, target_kw: float) -> None:
        """The group's command at `t_s` (after a control cycle)."""
        if mode != self.mode:
            held_s = t_s - self.since_s
            if mode == "run":
                self.wakes += 1
                if held_s < self.min_off_s - _EPS_S:
                    self.min_off_violations += 1
            else:
                self.sleeps += 1
                if held_s < self.min_on_s - _EPS_S:
                    self.min_on_violations += 1
            self.mode, self.since_s = mode, t_s
        elif mode == "run" and self.target_kw is not None and abs(target_kw - self.target_kw) > _EPS_KW:
            self.target_changes += 1
        self.target_kw = target_kw
