"""The ASIC agent's memory across restarts: the last command it was told, on local disk.

Written atomically (temporary file, fsync, rename, fsync of the directory) so a power cut leaves
either the old or the new command, never half of one. A file that cannot be read or does not
validate is logged and ignored: the agent then starts holding (commanding nothing) until the daemon's
retained setpoint arrives, rather than guessing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Annotated, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mullet.drivers.group_command import GroupCommand

log = structlog.get_logger("mullet.agent")


class SavedCommand(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    v: Literal[1] = 1
    seq_applied: Annotated[int, Field(ge=0)] | None
    mode: Literal["run", "curtail"] | None
    power_kw: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None
    trip_stage: Annotated[int, Field(ge=0)] | None
    failsafe_active: bool = False
    saved_ts: float


def load_command(path: Path) -> tuple[GroupCommand, bool] | None:
    """The saved command and whether the fail-safe was in force; None when there is none usable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("agent state unreadable; holding until a setpoint arrives", path=str(path), error=str(exc))
        return None
    try:
        saved = SavedCommand.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        log.error(
            "agent state invalid; holding until a setpoint arrives", path=str(path), error=str(exc)[:200]
        )
        return None
    command = GroupCommand(saved.seq_applied, saved.mode, saved.power_kw, saved.trip_stage)
    return command, saved.failsafe_active


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class CommandStore:
    """Saves the latest command off the event loop; a burst of changes costs one write each time
    the writer gets round to it, and the newest always wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0
        self.failures = 0
        self._pending: bytes | None = None
        self._wanted = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def save(self, command: GroupCommand, *, failsafe_active: bool) -> None:
        snapshot = SavedCommand(
            seq_applied=command.seq_applied,
            mode=command.mode,
            power_kw=command.power_kw,
            trip_stage=command.trip_stage,
            failsafe_active=failsafe_active,
            saved_ts=time.time(),
        )
        self._pending = snapshot.model_dump_json().encode()
        self.idle.clear()
        self._wanted.set()

    async def run(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            data, self._pending = self._pending, None
            if data is not None:
                try:
                    await asyncio.to_thread(_write_atomically, self.path, data)
                    self.writes += 1
                except OSError as exc:
                    self.failures += 1
                    log.error("agent state not saved", path=str(self.path), error=str(exc))
            if self._pending is None:
                self.idle.set()
