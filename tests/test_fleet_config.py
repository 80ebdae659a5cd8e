"""The fleet dispatcher's config: the shipped example parses, mistakes are named, the CLI exits 2."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from helpers import MULLETD, ROOT

from mullet.daemon.config import ConfigError
from mullet.daemon.fleet.config import load_fleet_config, parse_fleet_config

EXAMPLE = ROOT / "deploy" / "fleet" / "fleet.example.toml"  # the fleet's, not helpers.EXAMPLE (a site's)


def test_the_example_parses() -> None:
    config = load_fleet_config(EXAMPLE)
    assert config.topic_root == "fleet/tx-portfolio"
    assert [s.root for s in config.sites] == ["mullet/tx-demo-1", "mullet/tx-demo-2", "mullet/tx-west-7"]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d["fleet"].update(stale_seconds=3), "fleet.stale_seconds: unknown key"),
        (lambda d: d["fleet"].update(stale_after_s=2), "fleet.stale_after_s: must be > 5"),
        (lambda d: d["sites"].append({"site_id": "tx-demo-1"}), "sites[3].site_id: duplicate 'tx-demo-1'"),
        (lambda d: d.update(sites=[]), "sites: "),
    ],
)
def test_mistakes_are_named(mutate, problem: str) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    mutate(data)
    with pytest.raises(ConfigError) as caught:
        parse_fleet_config(data)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_mulletd_fleet_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\nfleet_id = "x"\nbogus = 1\n')
    result = subprocess.run(
        [MULLETD, "fleet", "--config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "fleet.bogus: unknown key" in result.stderr
    assert "sites: required key is missing" in result.stderr
