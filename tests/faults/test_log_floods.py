"""Log floods (issue 17, finding 7): a meter that never answers or answers garbage, polled at 50 Hz by
a running `mulletd`, must not flood the daemon's log, and its state changes must be in it.

Before: pymodbus wrote a hex dump per failed poll (150-340 lines a minute) and the daemon itself said
nothing about a meter that was down. Now the meter's state is logged once per change, with the reason
("meter down" ... "meter up"), and pymodbus' own lines stay out unless asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Literal

from faultkit import Faulty, faulty_site
from helpers import until

Mode = Literal["blackhole", "garbage", "forward"]
POLL_HZ = 50.0
FAILED_POLLS = 25  # per phase: more than the 15 lines allowed, so a line per poll would show


class MeterFront:
    """A TCP front for the simulated meter: swallows requests (`blackhole`), answers random bytes
    (`garbage`) or passes them on (`forward`). Changing the mode drops the open connections."""

    def __init__(self) -> None:
        self.mode: Mode = "blackhole"
        self.target_port: int | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        for writer in list(self._writers):
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.set_mode("blackhole")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        mode = self.mode
        try:
            if mode == "forward":
                assert self.target_port is not None
                device_r, device_w = await asyncio.open_connection("127.0.0.1", self.target_port)
                self._writers.add(device_w)

                async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                    while chunk := await src.read(4096):
                        dst.write(chunk)
                    dst.close()

                await asyncio.gather(pipe(reader, device_w), pipe(device_r, writer))
                return
            while await reader.read(4096):
                if mode == "garbage":
                    writer.write(os.urandom(12))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _meter_lines(run: Faulty, since: int) -> list[dict]:
    return [r for r in run.log_records()[since:] if str(r.get("event", "")).startswith("meter ")]


async def test_a_blackholed_then_garbage_meter_logs_its_state_once_not_every_poll(
    mqtt_broker, tmp_path
) -> None:
    front = MeterFront()
    await front.start()

    def mutate(data: dict) -> None:
        data["meter"].update(port=front.port, poll_hz=POLL_HZ)

    async def wire(site) -> None:
        front.target_port = site.meter.port

    try:
        async with faulty_site(
            mqtt_broker, tmp_path, mutate, sim_ports={"meter": 0}, before_daemon=wire
        ) as run:
            timeouts = 'mullet_meter_samples_rejected_total{reason="timeout"}'
            start = len(run.log_records())
            # ~5 s of a meter that accepts TCP and never answers (a read times out at 0.2 s): 25 failed
            # polls, against at most 15 lines of log in all.
            base = await run.metric(timeouts, 0.0)
            await run.until_metric(timeouts, lambda v: v >= base + FAILED_POLLS, 60, 0.0)
            records = run.log_records()[start:]
            down = [r for r in _meter_lines(run, start) if r["event"] == "meter down"]
            assert len(down) == 1, down
            assert "no usable answer" in down[0]["reason"]
            assert not [r for r in records if str(r.get("logger", "")).startswith("pymodbus")]
            assert len(records) <= 15, records

            # Garbage answers: still no usable answer, so no new state and no hex dumps.
            front.set_mode("garbage")
            start = len(run.log_records())
            base = await run.metric(timeouts, 0.0)
            await run.until_metric(timeouts, lambda v: v >= base + FAILED_POLLS, 60, 0.0)
            records = run.log_records()[start:]
            assert not [r for r in records if str(r.get("logger", "")).startswith("pymodbus")]
            assert len(records) <= 15, records

            # The meter answers again: one "meter up".
            front.set_mode("forward")
            await run.until_metric("mullet_meter_stale", lambda v: v == 0.0, 20)
            await until(
                lambda: any(r["event"] == "meter up" for r in _meter_lines(run, start)), 20, "meter up"
            )
            events = [r["event"] for r in _meter_lines(run, 0)]
            assert events.count("meter down") == 1 and events[-1] == "meter up", events
    finally:
        with contextlib.suppress(Exception):
            await front.stop()
