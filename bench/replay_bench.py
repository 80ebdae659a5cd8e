"""How fast `mulletd replay` runs: simulated seconds per wall second at the 12-group example site and at a
600-group site, and the wall time of the shipped month.

Issue 19's goal: at least 10,000x real time at 12 groups and 1,000x at 600 groups. Both are ratios
against the real clock already; absolute times move 3-4x between machines, so the script also times a
reference in the same run: the bare physics, every group's ramp advanced and summed once per control
step the replay took (`reference`), a loop no replay can beat. It prints the replay's cost per step
against that loop's beside the speed-up.

Scenarios: the shipped month (simulators/scenarios/ercot-west: real ERCOT West hub prices, its 4CP
intervals, a synthetic AI trace, grid events) at both sizes, economics off and on. The 600-group site is
deterministic (random.Random(seed)): ~95-ASIC containers of five models with the example site's control
settings, 30 AI tenants, an interconnect that makes mining ~3/4 of the site.
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import structlog
from _common import print_header, print_table, reproduce_command

from mullet.daemon.config import Config, parse_config
from mullet.daemon.replay.engine import Replay
from mullet.daemon.replay.results import summarize
from mullet.daemon.replay.scenario import Scenario, load_scenario
from mullet.simulators.mining import MiningGroup, SimGroupSpec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "site.example.toml"
SHIPPED = ROOT / "simulators" / "scenarios" / "ercot-west" / "scenario.toml"
GOAL = {12: 10_000.0, 600: 1_000.0}
MODELS = (  # (kW per ASIC, J/TH): S19j Pro, M50S, S19 XP, M60, S21
    (3.05, 29.5),
    (3.3, 26.0),
    (3.25, 21.5),
    (3.4, 18.5),
    (3.5, 17.5),
)


def example_data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


def large_site(groups: int, seed: int) -> dict[str, Any]:
    """The example site's settings with `groups` containers and groups // 20 tenants."""
    rng = random.Random(seed)
    data = example_data()
    data["groups"] = []
    for n in range(groups):
        kw_each, j_per_th = MODELS[rng.randrange(len(MODELS))]
        group: dict[str, Any] = {
            "group_id": f"g{n:04d}",
            "rated_kw": round(rng.randint(90, 100) * kw_each, 1),
            "efficiency_j_per_th": j_per_th,
            "priority": rng.randint(1, 100),
        }
        if j_per_th < 20 and rng.random() < 0.5:
            group.update(supports_power_target=True, min_power_kw=round(group["rated_kw"] / 2, 1))
        data["groups"].append(group)
    tenants = max(1, groups // 20)
    # The first two are named like the example's, so a scenario's AI traces drive them too.
    names = ["ai-a", "ai-b"] + [f"ai-{n:02d}" for n in range(2, tenants)]
    data["tenants"] = [
        {"tenant_id": names[n], "reserved_kw": 1500.0, "flexible_kw": 300.0 if n % 3 == 0 else 0.0}
        for n in range(tenants)
    ]
    data["pdus"] = []
    data.pop("simulator", None)
    mining_kw = sum(g["rated_kw"] for g in data["groups"])
    data["site"]["interconnect_kw"] = round(mining_kw * 1.05 + tenants * 1500.0 * 0.5)
    data["control"]["restore_ramp_kw_per_min"] = 10_000.0 * groups / 12
    for stage in data["control"].get("trip_stages", []):
        stage["shed_kw"] = stage["shed_kw"] * groups / 12
        stage.pop("hard_cut", None)
    return data


def with_economics(data: dict[str, Any], on: bool) -> Config:
    data = {**data, "economics": {**data.get("economics", {}), "enabled": on}}
    return parse_config(data)


def reference_s(config: Config, steps: int, step_s: float) -> float:
    """The bare physics: every group advanced and summed once per step."""
    groups = [
        MiningGroup(SimGroupSpec(g.group_id, g.rated_kw, g.efficiency_j_per_th, sleep_kw=g.sleep_kw))
        for g in config.groups
    ]
    for n, group in enumerate(groups):
        group.target_kw = group.sleep_kw if n % 2 else group.rated_kw
    started = time.perf_counter()
    total = 0.0
    for _ in range(steps):
        for group in groups:
            group.advance(step_s)
            total += group.power_kw
    return time.perf_counter() - started


def timed(config: Config, scenario: Scenario) -> tuple[float, Replay]:
    gc.collect()
    started = time.perf_counter()
    replay = Replay(config, scenario).run()
    return time.perf_counter() - started, replay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=str(SHIPPED.relative_to(ROOT)))
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 600])
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per size and setting (the median is shown)"
    )
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    options = [
        ("--scenario", args.scenario),
        ("--sizes", args.sizes),
        ("--seed", args.seed),
        ("--repeat", args.repeat),
    ]
    print_header(
        "replay speed",
        "simulated s per wall s of Replay(config, scenario).run(), per size, economics off and on",
        reproduce_command("replay_bench.py", options),
    )
    scenario = load_scenario(ROOT / args.scenario)
    days = scenario.duration_s / 86_400
    print(
        f"scenario: {scenario.name}, {days:g} days, {len(scenario.prices)} prices,"
        f" {len(scenario.events)} events"
    )
    rows, verdicts, step_s, poll_s = [], [], 0.0, 0.0
    for size in args.sizes:
        data = example_data() if size == 12 else large_site(size, args.seed)
        for economics in (False, True):
            config = with_economics(data, economics)
            walls = []
            replay = None
            for _ in range(args.repeat):
                wall_s, replay = timed(config, scenario)
                walls.append(wall_s)
            assert replay is not None
            step_s, poll_s = replay.step_s, replay.meter_poll_s
            wall_s = sorted(walls)[len(walls) // 2]
            speedup = scenario.duration_s / wall_s
            ref_s = reference_s(config, replay.steps, replay.step_s)
            result = summarize(replay, "bench")
            rows.append(
                [
                    f"{size} groups, economics {'on' if economics else 'off'}",
                    len(config.groups),
                    replay.steps,
                    round(wall_s, 2),
                    f"{speedup:,.0f}x",
                    round(wall_s / replay.steps * 1e6, 1),
                    round(ref_s / replay.steps * 1e6, 1),
                    round(wall_s / ref_s, 1),
                    result["energy_mwh"]["curtailed"],
                ]
            )
            goal = GOAL.get(size)
            if goal is not None:
                verdicts.append((size, economics, speedup, goal))
    print_table(
        [
            "site",
            "groups",
            "steps",
            "wall s",
            "sim/wall",
            "us/step",
            "ref us/step",
            "x ref",
            "curtailed MWh",
        ],
        rows,
    )
    print()
    print(
        f"control-cycle resolution: {step_s:g} s while anything moves, {poll_s:g} s meter reads in a"
        " frequency excursion, a jump to the next input when quiet (docs/replay.md)"
    )
    failed = False
    for size, economics, speedup, goal in verdicts:
        ok = speedup >= goal
        failed |= not ok
        print(
            f"{'PASS' if ok else 'FAIL'}: {size} groups, economics {'on' if economics else 'off'}: "
            f"{speedup:,.0f}x real time (goal >= {goal:,.0f}x)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
