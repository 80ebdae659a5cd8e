"""A fake LuxOS miner: the LuxOS TCP JSON API (the cgminer-style API on port 4028) from the device
side, well enough for pyasic's `LUXMiner` to drive it.

Wire format (as pyasic sends it): one JSON object per TCP connection, `{"command": "...",
"parameter": "a,b"}`, answered with one JSON object, then the server closes. `a+b` is a
multicommand, answered as `{"a": [reply_a], "b": [reply_b]}`. Privileged commands (`curtail`,
`profileset`, `atmset`, `logoff`) take the session id as their first parameter; `logon` opens the one
session the miner allows, `session` tells the current one (pyasic asks it first and reuses it), and a
session lapses after `session_timeout_s` without use.

asic-rs drives it too (`drivers/miners_asic_rs.py`): it identifies LuxOS by `LUXMINER` in the
`version` reply (the row's `Type` is the model) and reads hashrate from `stats`' second entry
(`GHS 5s`), as in asic-rs's own LuxOS v1 fixtures (`version.json`, `stats.json`). It takes no port, so
each miner then needs port 4028 on an address of its own (`LuxosFleet(base_address=...)`).

Physics: power moves linearly toward its target, `rated_w / curtail_s` down and `rated_w / resume_s`
up (0 s = at once), evaluated when read. Sleep draws `sleep_w` (LuxOS claims ~25 W within ~5 s);
awake, the active profile's watts. Hashrate follows power at the profile's efficiency.

Fault switches: `ignore_commands` (acknowledge `curtail`/`profileset` with success and change
nothing: the case shed verification exists for), `unresponsive` (accept connections and never answer),
`response_delay_s` (answer late), `end_session()` (the session lapses now).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MAX_REQUEST_BYTES = 65_536
_REQUEST_IDLE_S = 10.0
_VERSION = "2024.11.1-fake"
_DESCRIPTION = f"LUXminer {_VERSION}"  # asic-rs identifies LuxOS by "LUXMINER" in the `version` reply
# LuxOS profile steps: each step is about 5 % of the default profile's power (the firmware's table
# differs per model; the shape is what matters to a driver choosing "the highest profile <= W").
_PROFILE_STEP_FRACTION = 0.05
_PROFILE_STEPS = range(-6, 3)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    watts: float
    frequency_mhz: int
    voltage_v: float


def default_profiles(rated_w: float) -> list[Profile]:
    profiles = []
    for step in _PROFILE_STEPS:
        name = "default" if step == 0 else f"{step:+d}"
        profiles.append(
            Profile(
                name=name,
                watts=round(rated_w * (1 + step * _PROFILE_STEP_FRACTION)),
                frequency_mhz=490 + 25 * step,
                voltage_v=round(13.0 + 0.1 * step, 2),
            )
        )
    return profiles


class LuxosMinerSim:
    """One fake LuxOS miner on its own TCP port (0 binds a free one; `.port` once started)."""

    def __init__(
        self,
        name: str,
        *,
        rated_w: float = 3500.0,
        sleep_w: float = 25.0,
        efficiency_j_per_th: float = 17.5,
        curtail_s: float = 5.0,
        resume_s: float = 10.0,
        host: str = "127.0.0.1",
        port: int = 0,
        response_delay_s: float = 0.0,
        session_timeout_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rated_w = rated_w
        self.sleep_w = sleep_w
        self.efficiency_j_per_th = efficiency_j_per_th
        self.curtail_s = curtail_s
        self.resume_s = resume_s
        self.host = host
        self.port = port
        self.response_delay_s = response_delay_s
        self.session_timeout_s = session_timeout_s
        self.profiles = default_profiles(rated_w)
        self.profile = "default"
        self.sleeping = False
        # fault switches
        self.ignore_commands = False
        self.unresponsive = False
        # what a test may look at
        self.commands: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._clock = clock
        self._started_s = clock()
        self._power_w = self._target_w()
        self._at_s = clock()
        self._session_id = ""
        self._session_used_s = 0.0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # ground truth

    @property
    def power_w(self) -> float:
        self._advance()
        return self._power_w

    @property
    def hashrate_ths(self) -> float:
        """Hashing only above the sleep draw; at the active profile's efficiency."""
        return max(0.0, self.power_w - self.sleep_w) / self.efficiency_j_per_th

    @property
    def active_profile(self) -> Profile:
        return next(p for p in self.profiles if p.name == self.profile)

    def end_session(self) -> None:
        """The session lapses now, as after the firmware's idle timeout or a reboot."""
        self._session_id = ""

    def reboot(self) -> None:
        """Come back awake at the default profile (a power cycle does not remember sleep)."""
        self._advance()
        self.sleeping = False
        self.profile = "default"
        self._session_id = ""

    def _target_w(self) -> float:
        return self.sleep_w if self.sleeping else self.active_profile.watts

    def _advance(self) -> None:
        now_s = self._clock()
        dt_s = max(0.0, now_s - self._at_s)
        self._at_s = now_s
        target_w = self._target_w()
        gap_w = target_w - self._power_w
        if gap_w > 0:
            rate = self.rated_w / self.resume_s if self.resume_s > 0 else float("inf")
            self._power_w = min(target_w, self._power_w + rate * dt_s)
        elif gap_w < 0:
            rate = self.rated_w / self.curtail_s if self.curtail_s > 0 else float("inf")
            self._power_w = max(target_w, self._power_w - rate * dt_s)

    # server

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = await self._read_request(reader)
            if request is None:
                return
            if self.unresponsive:
                await asyncio.Event().wait()  # hold the connection open, never answer
            if self.response_delay_s > 0:
                await asyncio.sleep(self.response_delay_s)
            writer.write(json.dumps(self.handle(request)).encode() + b"\x00")
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> Any:
        """One JSON object; the client does not close its side, so parse as bytes arrive."""
        buffer = b""
        decoder = json.JSONDecoder()
        while len(buffer) < _MAX_REQUEST_BYTES:
            async with asyncio.timeout(_REQUEST_IDLE_S):  # not wait_for: 3.11's can drop a cancel
                chunk = await reader.read(4096)
            if not chunk:
                break
            buffer += chunk
            try:
                request, _ = decoder.raw_decode(buffer.decode("utf-8", errors="replace").strip("\x00 \n"))
                return request
            except ValueError:
                continue
        return {"command": buffer[:64].decode("utf-8", errors="replace")} if buffer else None

    # the API

    def handle(self, request: Any) -> dict[str, Any]:
        """Answer one request object (public so unit tests can call it without a socket)."""
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            self.rejected["malformed"] += 1
            return _error(14, "Invalid command")
        command: str = request["command"]
        raw_parameter = request.get("parameter", "")
        parameters = [p for p in str(raw_parameter).split(",")] if raw_parameter != "" else []
        if "+" in command:
            reply: dict[str, Any] = {}
            for part in command.split("+"):
                if part in _PRIVILEGED:
                    reply[part] = [_error(45, "Access denied to '+' for privileged commands")]
                else:
                    reply[part] = [self._one(part, [])]
            reply["id"] = 1
            return reply
        return self._one(command, parameters)

    def _one(self, command: str, parameters: list[str]) -> dict[str, Any]:
        self.commands[command] += 1
        if command in _PRIVILEGED:
            if not parameters or not self._session_valid(parameters[0]):
                self.rejected["invalid_session"] += 1
                return _error(303, "Invalid session id")
            self._session_used_s = self._clock()
            parameters = parameters[1:]
        handler = _HANDLERS.get(command)
        if handler is None:
            self.rejected["unknown_command"] += 1
            return _error(14, "Invalid command")
        return handler(self, parameters)

    def _session_valid(self, session_id: str) -> bool:
        if not self._session_id:
            return False
        if self._clock() - self._session_used_s > self.session_timeout_s:
            self._session_id = ""
            return False
        return secrets.compare_digest(session_id, self._session_id)

    def _cmd_logon(self, _: list[str]) -> dict[str, Any]:
        if self._session_id and self._clock() - self._session_used_s <= self.session_timeout_s:
            return _error(302, "Another session is active")
        self._session_id = secrets.token_hex(4)
        self._session_used_s = self._clock()
        return _ok(301, "Session created", SESSION=[{"SessionID": self._session_id}])

    def _cmd_session(self, _: list[str]) -> dict[str, Any]:
        if self._session_id and self._clock() - self._session_used_s > self.session_timeout_s:
            self._session_id = ""
        return _ok(307, "Session info", SESSION=[{"SessionID": self._session_id}])

    def _cmd_logoff(self, _: list[str]) -> dict[str, Any]:
        self._session_id = ""
        return _ok(304, "Session ended")

    def _cmd_kill(self, _: list[str]) -> dict[str, Any]:
        self._session_id = ""
        return _ok(305, "Session killed")

    def _cmd_curtail(self, parameters: list[str]) -> dict[str, Any]:
        action = parameters[0] if parameters else ""
        if action not in ("sleep", "wakeup"):
            return _error(311, f"Invalid curtail mode {action!r}")
        if not self.ignore_commands:
            self._advance()
            self.sleeping = action == "sleep"
        return _ok(310, "Curtail: sleep" if action == "sleep" else "Curtail: wakeup")

    def _cmd_profileset(self, parameters: list[str]) -> dict[str, Any]:
        name = parameters[0] if parameters else ""
        if not any(p.name == name for p in self.profiles):
            return _error(321, f"Invalid profile {name!r}")
        if not self.ignore_commands:
            self._advance()
            self.profile = name
        return _ok(320, "Profile set", PROFILE=[{"Profile": name}])

    def _cmd_atmset(self, _: list[str]) -> dict[str, Any]:
        return _ok(340, "Advanced Thermal Management configuration updated")

    def _cmd_atm(self, _: list[str]) -> dict[str, Any]:
        return _ok(339, "ATM", ATM=[{"Enabled": False}])

    def _cmd_power(self, _: list[str]) -> dict[str, Any]:
        return _ok(335, "Power", POWER=[{"Watts": round(self.power_w), "PSU": True}])

    def _cmd_summary(self, _: list[str]) -> dict[str, Any]:
        ghs = self.hashrate_ths * 1000.0
        elapsed = int(self._clock() - self._started_s)
        return _ok(
            11,
            "Summary",
            SUMMARY=[
                {
                    "Elapsed": elapsed,
                    "GHS 5s": round(ghs, 2),
                    "GHS 30m": round(ghs, 2),
                    "GHS av": round(ghs, 2),
                    "Accepted": 0,
                    "Rejected": 0,
                }
            ],
        )

    def _cmd_stats(self, _: list[str]) -> dict[str, Any]:
        ghs = self.hashrate_ths * 1000.0
        ideal = (self.active_profile.watts - self.sleep_w) / self.efficiency_j_per_th * 1000.0
        board: dict[str, Any] = {"Elapsed": int(self._clock() - self._started_s)}
        board.update(total_rateideal=round(ideal, 2), rate_unit="GH", total_rate=round(ghs, 2))
        board.update({"GHS 5s": round(ghs, 2), "GHS av": round(ghs, 2)})  # asic-rs reads its hashrate here
        for n in (1, 2, 3):
            board[f"chain_rate{n}"] = round(ghs / 3, 2)
            board[f"chain_acn{n}"] = 108
            board[f"temp_chip{n}"] = "60-61-62-63"
            board[f"temp_pcb{n}"] = "50-51-52-53"
        return _ok(70, "CGMiner stats", STATS=[{"STATS": 0, "ID": "BC50", "Type": "Antminer S21"}, board])

    def _cmd_profiles(self, _: list[str]) -> dict[str, Any]:
        rows = [
            {
                "Profile Name": p.name,
                "Watts": p.watts,
                "Hashrate": round((p.watts - self.sleep_w) / self.efficiency_j_per_th, 2),
                "IsTuned": False,
                "Frequency": p.frequency_mhz,
                "Voltage": p.voltage_v,
                "Step": "0" if p.name == "default" else p.name,
            }
            for p in self.profiles
        ]
        return _ok(332, "Profiles", PROFILES=rows)

    def _cmd_config(self, _: list[str]) -> dict[str, Any]:
        row = {
            "Profile": self.profile,
            "IsAtm": False,
            "RedLed": "off",
            "MACAddr": "02:00:00:" + self.name.encode().hex()[-6:].rjust(6, "0")[:2] + ":00:01",
            "Hostname": self.name,
            "CurtailMode": "sleep" if self.sleeping else "none",
        }
        return _ok(33, "CGMiner config", CONFIG=[row])

    def _cmd_version(self, _: list[str]) -> dict[str, Any]:
        row = {"API": "3.7", "LUXminer": _VERSION, "Miner": _VERSION, "Type": "Antminer S21"}
        return _ok(22, "LUXminer versions", VERSION=[row])

    def _cmd_tempctrl(self, _: list[str]) -> dict[str, Any]:
        return _ok(350, "Tempctrl", TEMPCTRL=[{"Mode": "Auto", "Target": 75, "Hot": 85, "Dangerous": 95}])

    def _cmd_fans(self, _: list[str]) -> dict[str, Any]:
        fans = [{"ID": i, "RPM": 0 if self.sleeping else 4200, "Speed": 60} for i in range(4)]
        return _ok(202, "Fans", FANS=fans, FANCTRL=[{"MinFans": 4}])

    def _cmd_pools(self, _: list[str]) -> dict[str, Any]:
        pool = {
            "POOL": 0,
            "URL": "stratum+tcp://pool.example.net:3333",
            "User": f"mullet.{self.name}",
            "GROUP": 0,
            "Status": "Alive",
            "Stratum Active": True,
            "Accepted": 0,
            "Rejected": 0,
            "Get Failures": 0,
            "Remote Failures": 0,
        }
        return _ok(7, "1 Pool(s)", POOLS=[pool])

    def _cmd_groups(self, _: list[str]) -> dict[str, Any]:
        return _ok(7, "1 Group(s)", GROUPS=[{"GROUP": 0, "Name": "Default", "Quota": 1}])


def _status(kind: str, code: int, msg: str) -> list[dict[str, Any]]:
    return [{"STATUS": kind, "When": int(time.time()), "Code": code, "Msg": msg, "Description": _DESCRIPTION}]


def _ok(code: int, msg: str, **body: Any) -> dict[str, Any]:
    return {"STATUS": _status("S", code, msg), **body, "id": 1}


def _error(code: int, msg: str) -> dict[str, Any]:
    return {"STATUS": _status("E", code, msg), "id": 1}


_PRIVILEGED = frozenset({"curtail", "profileset", "atmset", "logoff"})
_HANDLERS: dict[str, Callable[[LuxosMinerSim, list[str]], dict[str, Any]]] = {
    name.removeprefix("_cmd_"): getattr(LuxosMinerSim, name)
    for name in dir(LuxosMinerSim)
    if name.startswith("_cmd_")
}


class LuxosFleet:
    """Many fake miners, started and stopped together. With `base_address`, miner i listens on
    `base_address + i` (port `port`, 4028 by default there), as asic-rs needs: it takes no port."""

    def __init__(
        self, count: int, *, prefix: str = "m", base_address: str | None = None, **miner_kwargs: Any
    ) -> None:
        if base_address is not None:
            first = ipaddress.IPv4Address(base_address)
            port = miner_kwargs.pop("port", 4028)
            self.miners = [
                LuxosMinerSim(f"{prefix}{i:03d}", host=str(first + i), port=port, **miner_kwargs)
                for i in range(count)
            ]
        else:
            self.miners = [LuxosMinerSim(f"{prefix}{i:03d}", **miner_kwargs) for i in range(count)]

    async def __aenter__(self) -> LuxosFleet:
        await asyncio.gather(*(m.start() for m in self.miners))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(m.stop() for m in self.miners))

    @property
    def ports(self) -> list[int]:
        return [m.port for m in self.miners]

    @property
    def hosts(self) -> list[str]:
        return [m.host for m in self.miners]


async def _serve_fleet(args: argparse.Namespace) -> None:
    fleet = LuxosFleet(
        args.count,
        rated_w=args.rated_w,
        curtail_s=args.curtail_s,
        resume_s=args.resume_s,
        response_delay_s=args.response_delay_s,
        base_address=args.base_address,
    )
    async with fleet:
        print(json.dumps({"host": fleet.hosts[0], "hosts": fleet.hosts, "ports": fleet.ports}), flush=True)
        # Serve until stdin closes (the parent went away) or a signal ends the process.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


def main(argv: list[str] | None = None) -> None:
    """`python -m mullet.simulators.luxos --count N`: serve N fake miners on free loopback ports (or,
    with `--base-address 127.77.0.1`, each on port 4028 of its own loopback address), print
    `{"host": ..., "hosts": [...], "ports": [...]}` on one line, and stop when stdin closes."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--rated-w", type=float, default=3500.0)
    parser.add_argument("--curtail-s", type=float, default=5.0)
    parser.add_argument("--resume-s", type=float, default=10.0)
    parser.add_argument("--response-delay-s", type=float, default=0.0)
    parser.add_argument("--base-address", default=None, help="miner i on port 4028 of this address + i")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_fleet(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
