"""The QSE link read and written by an independent Modbus master: Debian's `mbpoll` (libmodbus, C),
against `mulletd run` on the simulated site; then base points followed down and up, live."""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path

import pytest
from helpers import running_site
from test_qse import DEVICE_ID, Qse, until_telemetry, with_qse

pytestmark = [
    pytest.mark.asyncio(loop_scope="function"),
    pytest.mark.skipif(
        shutil.which("mbpoll") is None, reason="mbpoll not installed (apt-get install mbpoll)"
    ),
]


async def mbpoll(port: int, *args: str) -> tuple[int, list[str], str]:
    """One mbpoll run (`-1`: once, `-0`: 0-based addresses, `-B`: high word first): exit status, the
    value lines' values, stderr."""
    process = await asyncio.create_subprocess_exec(
        "mbpoll",
        "-1",
        "-0",
        "-B",
        "-p",
        str(port),
        "-a",
        str(DEVICE_ID),
        "-o",
        "5",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    values = [line.split("\t")[-1].strip() for line in out.decode().splitlines() if line.startswith("[")]
    assert process.returncode is not None
    return process.returncode, values, err.decode()


async def test_mbpoll_reads_telemetry_and_writes_a_deployment_and_base_points(
    mqtt_broker, tmp_path: Path
) -> None:
    async with running_site(mqtt_broker, tmp_path, with_qse(heartbeat_timeout_s=600.0)) as running:
        port = running.config.qse.port
        # The telemetry block as raw registers, then the MW points as float32 (ABCD).
        status, raw, err = await mbpoll(port, "-t", "3", "-r", "0", "-c", "32", "127.0.0.1")
        assert status == 0, err
        assert len(raw) == 32 and int(raw[0]) >= 1  # the control cycle's heartbeat has counted
        status, floats, err = await mbpoll(port, "-t", "3:float", "-r", "2", "-c", "3", "127.0.0.1")
        assert status == 0, err
        site_mw, mining_mw, ai_mw = map(float, floats)
        assert site_mw > mining_mw > 5.0 and ai_mw > 0.0

        # ERS-10: the amount (FC 16, one float32), then the level (FC 06); then its state back.
        assert (await mbpoll(port, "-t", "4", "-r", "0", "127.0.0.1", "7"))[0] == 0  # the heartbeat
        assert (await mbpoll(port, "-t", "4:float", "-r", "10", "127.0.0.1", "1.5"))[0] == 0
        assert (await mbpoll(port, "-t", "4", "-r", "12", "127.0.0.1", "1"))[0] == 0
        async with Qse(port) as qse:
            deployed = await until_telemetry(
                qse, lambda t: t["ers10_state"] == 2, 30, "ERS-10 deployed", beat=False
            )
        assert deployed["ers10_mw"] == pytest.approx(1.5)
        # A write the point list refuses: mbpoll reports the exception and exits 1.
        status, _values, err = await mbpoll(port, "-t", "4", "-r", "1", "127.0.0.1", "2")
        assert status == 1 and "Illegal data value" in err
        assert (await mbpoll(port, "-t", "4", "-r", "12", "127.0.0.1", "0"))[0] == 0  # recalled
        async with Qse(port) as qse:
            await until_telemetry(qse, lambda t: t["ers10_state"] == 0, 30, "ERS-10 recalled", beat=False)

            # A base point below what mining draws: followed down; then above it: followed up.
            for base_point_mw in (5.0, 6.5):
                assert (await mbpoll(port, "-t", "4:float", "-r", "2", "127.0.0.1", str(base_point_mw)))[
                    0
                ] == 0
                assert (await mbpoll(port, "-t", "4", "-r", "4", "127.0.0.1", "1"))[0] == 0

                def tracking(t: dict[str, float], target: float = base_point_mw) -> bool:
                    # Within 2 % of the base point, mining settled there (the deadband is 50 kW).
                    return not math.isnan(t["mining_mw"]) and abs(t["mining_mw"] - target) <= 0.02 * target

                seen = await until_telemetry(qse, tracking, 60, f"mining at {base_point_mw} MW", beat=False)
                assert seen["base_point_state"] == 2 and seen["base_point_mw"] == pytest.approx(base_point_mw)
                assert seen["binding"] == 4  # the base point binds mining
                assert seen["ai_mw"] > 0.0
