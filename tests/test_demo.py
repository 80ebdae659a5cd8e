"""`mulletd demo --duration 40`: the README's first command, on its embedded broker (amqtt); it ends
once its script has restored the site. On the example site it runs by default, given as `--config`
with the firmware ramps the other tests compress (helpers.CURTAIL_S, RESUME_S; 5 and 10 s shipped):
the script waits out both, and they were a third of this test's time."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

import tomli_w
from helpers import CURTAIL_S, EXAMPLE, MULLETD, RESUME_S, Metrics, read_metrics


async def test_demo_meets_the_limit_and_leaves_ai_untouched(tmp_path: Path) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    data["simulator"].update(curtail_s=CURTAIL_S, resume_s=RESUME_S)
    config_path = tmp_path / "site.toml"
    config_path.write_text(tomli_w.dumps(data))
    proc = await asyncio.create_subprocess_exec(
        str(MULLETD),
        "demo",
        "--config",
        str(config_path),
        "--duration",
        "40",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    scraped: Metrics | None = None
    async with asyncio.timeout(90):
        while raw := await proc.stdout.readline():
            line = raw.decode().rstrip()
            lines.append(line)
            # Scrape once the daemon reports a live site: the endpoint is real, not just printed.
            if (
                scraped is None
                and line.startswith("t=")
                and "site  " in line
                and "?" not in line.split("|")[0]
            ):
                url = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", "\n".join(lines[:3]))
                assert url, lines[:3]
                scraped = await asyncio.to_thread(read_metrics, int(url.group(1)))
        returncode = await proc.wait()

    output = "\n".join(lines)
    assert returncode == 0, output
    assert any(line.startswith("metrics at http://127.0.0.1:") for line in lines[:3]), lines[:3]
    status = [line for line in lines if line.startswith("t=")]
    assert len(status) >= 15, "a status line every second, from ready to the restore"
    assert all(k in status[0] for k in ("site", "AI", "mining", "budget", "curtailed"))
    summary = lines[-1]
    match = re.fullmatch(r"demo: event (\S+) limit (\d+) kW met in ([\d.]+) s; ai untouched: yes", summary)
    assert match, summary
    # Met by the curtail ramp (CURTAIL_S), well within the run; the figure is printed, the bound only
    # says the limit was met by the ramp and not at the end of the run.
    assert float(match.group(3)) <= 20.0
    assert "mining load back to" in output
    assert scraped is not None, "the daemon never reported a live site"
    assert scraped.value("mullet_plan_compute_seconds_count") >= 1
    assert scraped.value("mullet_site_power_watts") > 0  # a live site: known, and drawing
