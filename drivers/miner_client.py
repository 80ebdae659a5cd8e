"""The miner client the ASIC agent drives, whichever library talks to the miners.

Two backends implement it: `drivers/miners.py` (pyasic) and `drivers/miners_asic_rs.py` (asic-rs).
This module imports neither library, so a site that uses one backend need not install the other.

The contract, the same for both: every call has its own timeout and never raises; a command returns
only whether it was *sent* (firmware can acknowledge a sleep and keep hashing, so the agent confirms
from readings); a reading is None when the miner gave no usable power (missing, NaN or negative power
is unknown, never 0 W).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal, Protocol

Firmware = Literal["luxos", "auto"]


@dataclass(frozen=True, slots=True)
class MinerReading:
    """What the miner itself reports now; hashrate None when it did not say."""

    power_w: float
    hashrate_ths: float | None


@dataclass(frozen=True, slots=True)
class MinerEndpoint:
    name: str
    host: str
    port: int = 4028
    firmware: Firmware = "luxos"


class MinerClient(Protocol):
    """One miner's commands and readings, each bounded by the client's own timeout."""

    endpoint: MinerEndpoint
    failures: Counter[str]  # reason -> count, for logs and tests

    @property
    def name(self) -> str: ...

    async def sleep(self) -> bool: ...

    async def wake(self) -> bool: ...

    async def set_power_w(self, watts: float) -> bool: ...

    async def read(self) -> MinerReading | None: ...


def usable_reading(power_w: object, hashrate_ths: object) -> MinerReading | None:
    """A reading from what a library returned: None without a finite, non-negative power; a hashrate
    that is missing or not a finite, non-negative number becomes None, never 0."""
    watts = _finite_non_negative(power_w)
    if watts is None:
        return None
    return MinerReading(watts, _finite_non_negative(hashrate_ths))


def _finite_non_negative(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number
