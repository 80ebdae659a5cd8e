"""ASIC miners through pyasic: sleep, wake, power target and the read-back that confirms them.

The `pyasic` backend of the agent's miner client (`drivers/miner_client.py` has the contract;
`drivers/miners_asic_rs.py` is the other backend, and uses this one for what asic-rs lacks).

pyasic covers Braiins OS/OS+, LuxOS, VNish, stock Antminer and Whatsminer behind one interface
(`stop_mining`, `resume_mining`, `set_power_limit`, `get_wattage`, `get_hashrate`). Its answers are
not results: pyasic 0.79 turns a refused connection into an empty reply that passes as success, and
firmware can acknowledge a sleep and keep hashing. So every call here only says whether the command
was *sent*; the agent confirms from readings.

Every call has its own timeout and never raises: a miner that hangs costs its own slot only.
pyasic reads replies through Python 3.11's `asyncio.wait_for`, which can drop a cancellation racing
with the reply (gh-86296); each call checks for one afterwards (`drivers/wait_for_guard.py`), or a worker
would carry on and hang the agent's shutdown.

LuxOS (`firmware = "luxos"`): the `LUXMiner` class is built directly, so no detection probes run and
the API port can be any port (`rpc.port`; the firmware listens on 4028). Readings take one
`power+summary` multicommand, one TCP connection: pyasic 0.79's LuxOS `get_hashrate` returns None
whatever the miner says (a misplaced `return None`), so the summary's `GHS 5s` is read here.
pyasic keeps the LuxOS session id it got from `session`/`logon`; when the firmware drops the session
(idle timeout, reboot) privileged commands fail, so a failed command forgets the id and is tried once
more with a fresh session.

Other firmware (`firmware = "auto"`): `pyasic.get_miner(host)` detects it on its standard ports.

pyasic is imported with this module, at start-up: the import takes over a second on a loaded small
machine, and inside the first call's timeout it made that call fail.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pyasic  # type: ignore[import-untyped]
import structlog
from pyasic.miners.backends import LUXMiner  # type: ignore[import-untyped]

from mullet.drivers.miner_client import MinerEndpoint, MinerReading, usable_reading
from mullet.drivers.wait_for_guard import reraise_swallowed_cancel

log = structlog.get_logger("mullet.miners")


class PyasicMinerClient:
    """One miner's commands and readings through pyasic, each bounded by `timeout_s`."""

    def __init__(self, endpoint: MinerEndpoint, *, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.failures: Counter[str] = Counter()  # reason -> count, for logs and tests
        self._miner: Any = None

    @property
    def name(self) -> str:
        return self.endpoint.name

    async def sleep(self) -> bool:
        return await self._command("sleep", lambda m: m.stop_mining())

    async def wake(self) -> bool:
        return await self._command("wake", lambda m: m.resume_mining())

    async def set_power_w(self, watts: float) -> bool:
        """Ask for a power target; firmware with profiles (LuxOS) takes the highest profile <= watts."""
        return await self._command("power_target", lambda m: m.set_power_limit(int(watts)))

    async def read(self) -> MinerReading | None:
        """Power and hashrate now; None when the miner did not give a usable power reading."""
        try:
            async with asyncio.timeout(self.timeout_s):
                miner = await self._get_miner()
                reraise_swallowed_cancel()
                if miner is None:
                    return None
                if self.endpoint.firmware == "luxos":
                    data = await miner.rpc.multicommand("power", "summary")
                    reraise_swallowed_cancel()
                    return _luxos_reading(data)
                wattage = await miner.get_wattage()
                reraise_swallowed_cancel()
                hashrate = await miner.get_hashrate()
                reraise_swallowed_cancel()
                return _generic_reading(wattage, hashrate)
        except TimeoutError:
            self.failures["read_timeout"] += 1
        except Exception as exc:  # pyasic raises many kinds; none may take the agent down
            self.failures["read_error"] += 1
            log.debug("miner read failed", miner=self.name, error=repr(exc))
        return None

    async def _command(self, what: str, call: Any) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                miner = await self._get_miner()
                reraise_swallowed_cancel()
                if miner is None:
                    self.failures[f"{what}_no_miner"] += 1
                    return False
                sent = await call(miner)
                reraise_swallowed_cancel()
                if sent:
                    return True
                rpc = getattr(miner, "rpc", None)
                if rpc is not None and getattr(rpc, "session_token", None) is not None:
                    rpc.session_token = None  # the firmware may have dropped our session: log on again
                    sent = await call(miner)
                    reraise_swallowed_cancel()
                    if sent:
                        return True
                self.failures[f"{what}_refused"] += 1
        except TimeoutError:
            self.failures[f"{what}_timeout"] += 1
        except Exception as exc:
            self.failures[f"{what}_error"] += 1
            log.debug("miner command failed", miner=self.name, command=what, error=repr(exc))
        return False

    async def _get_miner(self) -> Any:
        if self._miner is not None:
            return self._miner
        if self.endpoint.firmware == "luxos":
            miner = LUXMiner(self.endpoint.host)
            miner.rpc.port = self.endpoint.port
            self._miner = miner
        else:
            self._miner = await pyasic.get_miner(self.endpoint.host)  # None until it answers
        return self._miner


def _luxos_reading(data: dict[str, Any]) -> MinerReading | None:
    try:
        watts = data["power"][0]["POWER"][0]["Watts"]
    except (LookupError, TypeError):
        return None
    try:
        ghs = data["summary"][0]["SUMMARY"][0]["GHS 5s"]
        hashrate_ths: Any = float(ghs) / 1000.0
    except (LookupError, TypeError, ValueError):
        hashrate_ths = None
    return usable_reading(watts, hashrate_ths)


def _generic_reading(wattage: Any, hashrate: Any) -> MinerReading | None:
    return usable_reading(wattage, hashrate)  # pyasic's SHA-256 default hashrate unit is TH/s
