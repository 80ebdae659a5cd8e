"""ASIC miners through asic-rs (`pyasic-rs`, its Python bindings): the `asic-rs` backend.

pyasic 0.79 announces its deprecation in favour of asic-rs, a Rust library with the same concepts:
`MinerFactory.get_miner(ip)` identifies the firmware and returns a `Miner` with `pause`, `resume`,
`set_power_limit`, `get_wattage` and `get_hashrate`, and `supports_*` properties that say which of them
the firmware has. The contract is the one in `drivers/miner_client.py`.

asic-rs takes no port: `get_miner` sends every firmware's discovery commands at once (among them an
HTTP `GET /` on port 80 and the CGMiner-style RPC `version` on 4028) and keeps the first firmware that
identifies itself (LuxOS: `LUXMINER` in the RPC `version` reply), then drives it on its standard ports.
So a miner's `port` must be the standard 4028 with this backend (the agent's config checks it), and
`firmware = "luxos"` is checked against what asic-rs identifies: another firmware on that address is
refused (counted, logged once), never driven.

Power targets where asic-rs has none (LuxOS in asic-rs 0.8.6: `supports_set_power_limit` is false;
LuxOS sets power by profile): with `power_fallback`, that one call goes through the pyasic backend
(`drivers/miners.py`), which picks the highest LuxOS profile at or below the target, logged once per
miner. pyasic is imported only then, at start-up (`power_fallback` is the agent's
`supports_power_target`), never inside a call's timeout. Without pyasic installed the power target is
refused (counted, logged once) and sleep, wake and readings go on through asic-rs.

asic-rs's awaitables are Rust futures (pyo3-async-runtimes); cancelling one at a timeout drops the
Rust future, so a hung miner holds nothing once its call has timed out.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pyasic_rs import MinerFactory
from pyasic_rs.data import HashRateUnit

from mullet.drivers.miner_client import Firmware, MinerClient, MinerEndpoint, MinerReading, usable_reading

log = structlog.get_logger("mullet.miners")

STANDARD_PORT = 4028  # the CGMiner-style API port asic-rs uses; it takes no other
_LUXOS = "LuxOS"  # asic-rs's name for the firmware (its LuxMinerFirmware's Display)


class AsicRsMinerClient:
    """One miner's commands and readings through asic-rs, each bounded by `timeout_s`."""

    def __init__(self, endpoint: MinerEndpoint, *, timeout_s: float, power_fallback: bool = False) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.failures: Counter[str] = Counter()
        self._factory = MinerFactory().with_identification_timeout_secs(max(1, math.ceil(timeout_s)))
        self._miner: Any = None
        self._pyasic: Any = _pyasic_backend() if power_fallback else None
        self._power_via_pyasic: MinerClient | None = None
        self._logged: set[str] = set()

    @property
    def name(self) -> str:
        return self.endpoint.name

    async def sleep(self) -> bool:
        return await self._command("sleep", "supports_pause", lambda m: m.pause())

    async def wake(self) -> bool:
        return await self._command("wake", "supports_resume", lambda m: m.resume())

    async def set_power_w(self, watts: float) -> bool:
        """A power target through asic-rs, or through pyasic where asic-rs has none for this firmware."""
        try:
            async with asyncio.timeout(self.timeout_s):
                miner = await self._get_miner()
                if miner is None:
                    self.failures["power_target_no_miner"] += 1
                    return False
                if miner.supports_set_power_limit:
                    return await self._sent("power_target", lambda: miner.set_power_limit(float(watts)))
                fallback = self._pyasic_client(miner)
                if fallback is None:
                    self.failures["power_target_unsupported"] += 1
                    return False
                # The fallback has its own timeout too; this one bounds detection and it together.
                return await fallback.set_power_w(watts)
        except TimeoutError:
            self.failures["power_target_timeout"] += 1
        except Exception as exc:  # never raise: a miner's trouble is counted, not the agent's
            self.failures["power_target_error"] += 1
            log.debug("miner command failed", miner=self.name, backend="asic-rs", error=repr(exc))
        return False

    async def read(self) -> MinerReading | None:
        """Power and hashrate now (two requests, at once); None without a usable power reading."""
        try:
            async with asyncio.timeout(self.timeout_s):
                miner = await self._get_miner()
                if miner is None:
                    return None
                answers: tuple[Any, Any] = await asyncio.gather(
                    miner.get_wattage(), miner.get_hashrate(), return_exceptions=True
                )
                wattage, hashrate = answers
                if isinstance(wattage, BaseException):
                    raise wattage
                reading = usable_reading(
                    wattage, None if isinstance(hashrate, BaseException) else _terahash(hashrate)
                )
                if reading is None:
                    self.failures["read_unusable"] += 1  # asic-rs gives None for an unreachable miner
                return reading
        except TimeoutError:
            self.failures["read_timeout"] += 1
        except Exception as exc:  # the bindings raise RuntimeError and others; none may take the agent down
            self.failures["read_error"] += 1
            log.debug("miner read failed", miner=self.name, backend="asic-rs", error=repr(exc))
        return None

    async def _command(self, what: str, capability: str, call: Any) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                miner = await self._get_miner()
                if miner is None:
                    self.failures[f"{what}_no_miner"] += 1
                    return False
                if not getattr(miner, capability):
                    self.failures[f"{what}_unsupported"] += 1
                    self._log_once(
                        f"{what}_unsupported",
                        "asic-rs cannot send this command to the miner's firmware",
                        command=what,
                        firmware=miner.firmware,
                    )
                    return False
                return await self._sent(what, lambda: call(miner))
        except TimeoutError:
            self.failures[f"{what}_timeout"] += 1
        except Exception as exc:
            self.failures[f"{what}_error"] += 1
            log.debug(
                "miner command failed", miner=self.name, backend="asic-rs", command=what, error=repr(exc)
            )
        return False

    async def _sent(self, what: str, command: Callable[[], Awaitable[bool]]) -> bool:
        """Send one asic-rs command; its False counts as refused (its errors, the callers' handlers)."""
        if await command():
            return True
        self.failures[f"{what}_refused"] += 1
        return False

    async def _get_miner(self) -> Any:
        if self._miner is not None:
            return self._miner
        try:
            miner = await self._factory.get_miner(self.endpoint.host)  # None until something answers
        except Exception as exc:
            self.failures["identify_error"] += 1
            log.debug("miner not identified", miner=self.name, backend="asic-rs", error=repr(exc))
            return None
        if miner is None:
            return None
        if self.endpoint.firmware == "luxos" and miner.firmware != _LUXOS:
            self.failures["wrong_firmware"] += 1
            self._log_once(
                "wrong_firmware",
                "miner refused: configured as LuxOS, identified as other firmware",
                firmware=miner.firmware,
                model=miner.model,
            )
            return None
        self._miner = miner
        return miner

    def _pyasic_client(self, miner: Any) -> MinerClient | None:
        if self._power_via_pyasic is not None:
            return self._power_via_pyasic
        if self._pyasic is None:
            self._log_once(
                "power_unsupported",
                "power target refused: asic-rs has none for this firmware and pyasic is not in use",
                firmware=miner.firmware,
                hint="supports_power_target = true and pip install 'mullet[asic]' bring pyasic",
            )
            return None
        firmware: Firmware = "luxos" if miner.firmware == _LUXOS else "auto"
        endpoint = MinerEndpoint(self.endpoint.name, self.endpoint.host, STANDARD_PORT, firmware)
        self._power_via_pyasic = self._pyasic.PyasicMinerClient(endpoint, timeout_s=self.timeout_s)
        self._log_once(
            "power_via_pyasic",
            "asic-rs has no power target for this firmware: pyasic sets it",
            firmware=miner.firmware,
        )
        return self._power_via_pyasic

    def _log_once(self, key: str, event: str, **fields: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(event, miner=self.name, host=self.endpoint.host, backend="asic-rs", **fields)


def _terahash(hashrate: Any) -> float | None:
    if hashrate is None:
        return None
    try:
        return float(hashrate.as_unit(HashRateUnit.TeraHash).value)
    except Exception:  # an odd value from the firmware is an unknown hashrate, not an error
        return None


def _pyasic_backend() -> Any:
    """The pyasic backend module for power-target fallbacks, or None where pyasic is not installed."""
    try:
        from mullet.drivers import miners
    except ImportError as exc:
        log.warning(
            "pyasic not installed: power targets only where asic-rs has them",
            error=str(exc),
            hint="pip install 'mullet[asic]'",
        )
        return None
    return miners
