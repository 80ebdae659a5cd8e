"""A device's health as an operator reads it in the log: one line per change of state, never one per
failed poll.

A meter polled at 50 Hz that answers garbage fails 3,000 times a minute; the daemon's log should say
so once, with the reason, and once more when it recovers. A state is taken on after `confirm_polls`
polls in a row agree (one lost packet is not an outage), and lines are at least `min_gap_s` apart: a
device that flaps is logged as it stands every `min_gap_s` with the number of changes in between,
so the log stays bounded whatever the device does. The counters (metrics) see every poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import structlog

# up: usable answers; slow: usable but late (over half the timeout); garbage: answers that cannot be
# used (Modbus exceptions, short or implausible values); down: no connection or no answer in time.
Health = Literal["new", "up", "slow", "garbage", "down"]


class DeviceHealth:
    def __init__(
        self,
        device: str,
        logger: structlog.typing.FilteringBoundLogger,
        *,
        confirm_polls: int = 3,
        min_gap_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        **context: object,
    ) -> None:
        self.device = device
        self.state: Health = "new"
        self.reason = ""
        self.changes = 0  # confirmed changes of state since start
        self._log = logger
        self._context = context
        self._confirm = confirm_polls
        self._min_gap_s = min_gap_s
        self._clock = clock
        self._candidate: Health = "new"
        self._candidate_reason = ""
        self._streak = 0
        self._logged: Health = "new"
        self._logged_s = -min_gap_s
        self._logged_changes = 0

    def note(self, state: Health, reason: str = "") -> None:
        """One poll's outcome; cheap when nothing changes (it runs on the sampling path)."""
        if state == self.state and self._logged == state:
            self._candidate, self._streak = state, 0
            return
        if state != self._candidate:
            self._candidate, self._candidate_reason, self._streak = state, reason, 0
        self._streak += 1
        if self._streak >= self._confirm and state != self.state:
            self.state, self.reason = state, self._candidate_reason
            self.changes += 1
        self._maybe_log()

    def _maybe_log(self) -> None:
        if self.state == self._logged:
            return
        now_s = self._clock()
        if now_s - self._logged_s < self._min_gap_s:
            return
        flaps = self.changes - self._logged_changes - 1  # changes not logged in between
        line = self._log.info if self.state == "up" else self._log.warning
        extra: dict[str, object] = {"reason": self.reason} if self.state != "up" else {}
        if flaps > 0:
            extra["changes_not_logged"] = flaps
        line(f"{self.device} {self.state}", was=self._logged, **extra, **self._context)
        self._logged, self._logged_s, self._logged_changes = self.state, now_s, self.changes
