"""Config validation and the `mulletd check-config` contract (exit 2 naming the bad key)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import EXAMPLE

from mullet.daemon.config import ConfigError, load_config, parse_config


def _example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mullet.daemon.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_example_site_is_valid_and_realistic() -> None:
    config = load_config(EXAMPLE)
    assert len(config.groups) >= 12
    assert len(config.tenants) >= 2
    assert len(config.pdus) >= 2
    assert config.meter.profile == "eastron-sdm630"
    assert all(g.outlets for g in config.groups)


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    result = _check_config(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: site tx-demo-1")
    assert len(result.stdout.strip().splitlines()) == 1
    # The example's DIN-rail meter refreshes frequency once a second: too slow for FFR, and said so.
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: trip stage 1 at 59.85 Hz fires within 2.600 s")
    assert warnings[0].endswith("MISSES FFR's 0.25 s deadline before the devices act")


def test_check_config_shows_a_relay_grade_meter_meeting_ffr(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace(
        "stale_after_s = 1.0\n", "stale_after_s = 1.0\nfrequency_refresh_s = 0.0167\n", 1
    )
    text = text.replace("poll_hz = 10", "poll_hz = 50", 1).replace("timeout_s = 0.2", "timeout_s = 0.05", 1)
    fast = tmp_path / "fast.toml"
    fast.write_text(text)
    result = _check_config(fast)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    assert "trip stage 1 at 59.85 Hz fires within 0.173 s" in result.stdout
    assert "meets FFR's 0.25 s deadline" in result.stdout


def test_check_config_names_a_negative_rated_kw(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    parts = text.split("[[groups]]")
    parts[4] = parts[4].replace("rated_kw = 660", "rated_kw = -5", 1)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[groups]]".join(parts))
    result = _check_config(bad)
    assert result.returncode == 2
    assert "groups[3].rated_kw: must be > 0, got -5" in result.stderr


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["site"].pop("interconnect_kw"), "site.interconnect_kw: required key is missing"),
        (
            lambda d: d["site"].update(interconnect_kw=float("nan")),
            "site.interconnect_kw: must be a finite number",
        ),
        (lambda d: d["meter"].update(poll_hz=0), "meter.poll_hz: must be > 0, got 0"),
        (
            lambda d: d["site"].update(timezone="Texas/Childress"),
            "site.timezone: unknown time zone 'Texas/Childress'",
        ),
        (lambda d: d["groups"][1].update(rated_kwh=5), "groups[1].rated_kwh: unknown key"),
        (lambda d: d["groups"][2].update(group_id="c01"), "groups[2].group_id: duplicate 'c01'"),
        (
            lambda d: d["groups"][0]["outlets"][0].update(pdu="nope"),
            "groups[0].outlets[0].pdu: unknown pdu 'nope'",
        ),
        (
            lambda d: d["groups"][0]["outlets"][0].update(outlet=99),
            "groups[0].outlets[0].outlet: pdu 'pdu-a' has 12",
        ),
        (lambda d: d["mqtt"].update(url="http://x"), "mqtt.url: "),
        (
            lambda d: d["pdus"][0].update(keepalive_s=2.0, stale_after_s=1.5),
            "pdus[0]: stale_after_s (1.5) must exceed keepalive_s (2.0)",
        ),
        (lambda d: d["pdus"][1].update(timeout_s=0), "pdus[1].timeout_s: must be > 0, got 0"),
        (
            lambda d: d.update(qse={"fail_safe": "limit"}),
            'qse.fail_safe_limit_kw: required when fail_safe = "limit"',
        ),
        (lambda d: d.update(qse={"deploy_kw": {"RRS-UFR": 1.0}}), "qse.deploy_kw: unknown product 'RRS-UFR'"),
        (lambda d: d.update(qse={"allow": ["gateway"]}), "qse.allow: not an address or network: 'gateway'"),
        (
            lambda d: d.update(qse={"fail_safe": "limit", "fail_safe_limit_kw": 20_000.0}),
            "qse.fail_safe_limit_kw: 20000 kW is above the interconnect",
        ),
    ],
)
def test_bad_configs_name_the_key(mutate, expected: str) -> None:
    data = _example()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any(expected in problem for problem in info.value.problems), info.value.problems


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    assert _check_config(tmp_path / "missing.toml").returncode == 2
    broken = tmp_path / "broken.toml"
    broken.write_text("[site\nsite_id = ")
    result = _check_config(broken)
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
