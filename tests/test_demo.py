"""`mulletd demo --duration 40`: the README's first command, on its embedded broker (amqtt)."""

from __future__ import annotations

import asyncio
import re
import sys
import urllib.request
from pathlib import Path

MULLETD = Path(sys.executable).with_name("mulletd")


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


async def test_demo_meets_the_limit_and_leaves_ai_untouched() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(MULLETD),
        "demo",
        "--duration",
        "40",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    scraped = ""
    async with asyncio.timeout(90):
        while raw := await proc.stdout.readline():
            line = raw.decode().rstrip()
            lines.append(line)
            # Scrape once the daemon reports a live site: the endpoint is real, not just printed.
            if not scraped and line.startswith("t=") and "site  " in line and "?" not in line.split("|")[0]:
                url = re.search(r"http://\S+/metrics", "\n".join(lines[:3]))
                assert url, lines[:3]
                scraped = await asyncio.to_thread(_scrape, url.group(0))
        returncode = await proc.wait()

    output = "\n".join(lines)
    assert returncode == 0, output
    assert any(line.startswith("metrics at http://127.0.0.1:") for line in lines[:3]), lines[:3]
    status = [line for line in lines if line.startswith("t=")]
    assert len(status) >= 30, "a status line every second"
    assert all(k in status[0] for k in ("site", "AI", "mining", "budget", "curtailed"))
    summary = lines[-1]
    match = re.fullmatch(r"demo: event (\S+) limit (\d+) kW met in ([\d.]+) s; ai untouched: yes", summary)
    assert match, summary
    assert float(match.group(3)) <= 5.0 + 2.0  # the default firmware curtail ramp plus slack
    assert "mining load back to" in output
    assert "mullet_plan_compute_seconds_bucket" in scraped
    assert "mullet_site_power_watts" in scraped
