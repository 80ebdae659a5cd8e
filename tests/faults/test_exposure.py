"""Quiet exposure and site size (issue 17, finding 8).

Before: the API and metrics bound to 0.0.0.0 started without a word, and a config of 100,000 groups
passed `check-config` (the daemon then never became ready). Now a listener beyond loopback is warned
about at start-up and marked in `mulletd status`, and site-size limits are enforced with a clear line.
"""

from __future__ import annotations

import asyncio
import subprocess
import tomllib

import tomli_w
from faultkit import faulty_site
from helpers import EXAMPLE, MULLETD

from mullet.daemon.config import MAX_GROUPS, MAX_PDUS, MAX_TENANTS
from mullet.daemon.records.status_cli import fetch_status, format_status
from mullet.simulators.ports import free_port


def _check_config(data: dict, tmp_path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "site.toml"
    path.write_text(tomli_w.dumps(data))
    return subprocess.run(
        [str(MULLETD), "check-config", str(path)], capture_output=True, text=True, timeout=120
    )


def test_check_config_refuses_a_site_beyond_the_size_limits_with_one_clear_line(tmp_path) -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    group, tenant, pdu = example["groups"][-1], example["tenants"][0], example["pdus"][0]
    cases = {
        "groups": [{**group, "group_id": f"g{i}", "outlets": []} for i in range(10_000)],  # 5x the limit
        "tenants": [{**tenant, "tenant_id": f"t{i}"} for i in range(MAX_TENANTS + 1)],
        "pdus": [{**pdu, "pdu_id": f"p{i}", "port": 6000 + i} for i in range(MAX_PDUS + 1)],
    }
    for key, entries in cases.items():
        data = {**example, key: entries, "simulator": {}}
        result = _check_config(data, tmp_path)
        assert result.returncode == 2, (key, result.stdout[-300:], result.stderr[-300:])
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"{key}: at most" in lines[0], lines[:3]
        assert len(lines[0]) < 300  # the list itself is never echoed
    assert (
        "at most 2,000 entries"
        in _check_config(
            {**example, "groups": cases["groups"][: MAX_GROUPS + 1], "simulator": {}}, tmp_path
        ).stderr
    )
    # At the limit it passes.
    assert _check_config({**example, "groups": cases["groups"][:MAX_GROUPS]}, tmp_path).returncode == 0


async def test_listeners_beyond_loopback_are_warned_about_and_shown_by_status(mqtt_broker, tmp_path) -> None:
    api_port = free_port()

    def mutate(data: dict) -> None:
        data["metrics"]["host"] = "0.0.0.0"
        data["http_api"] = {"enabled": True, "host": "0.0.0.0", "port": api_port}

    async with faulty_site(mqtt_broker, tmp_path, mutate) as run:
        status = await asyncio.to_thread(fetch_status, f"http://127.0.0.1:{api_port}", None)
        warnings = {
            r["event"]
            for r in run.log_records()
            if r.get("level") == "warning" and "beyond loopback" in str(r.get("event"))
        }
    assert warnings == {"metrics listens beyond loopback", "http api listens beyond loopback"}, warnings
    assert status["listeners"]["api"] == {"address": f"0.0.0.0:{api_port}", "beyond_loopback": True}
    assert status["listeners"]["metrics"]["beyond_loopback"] is True
    listen = [line for line in format_status(status).splitlines() if line.startswith("listen")]
    assert listen and listen[0].count("BEYOND LOOPBACK") == 2, listen
