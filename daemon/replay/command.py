"""`mulletd replay`: run every configuration over the scenario and print them side by side."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from mullet.daemon.config import Config, ConfigError
from mullet.daemon.replay.configs import load_configs
from mullet.daemon.replay.engine import Replay, config_ramp_limits
from mullet.daemon.replay.fourcp import (
    RuleRun,
    iter_columns,
    rule_runs,
    run_rule,
    strategy_scenario,
    summer_score,
)
from mullet.daemon.replay.ramps import RampLimits
from mullet.daemon.replay.render_fourcp import summer_lines
from mullet.daemon.replay.render_text import render_text
from mullet.daemon.replay.results import interval_table, summarize, to_json
from mullet.daemon.replay.scenario import Scenario, ScenarioError, load_scenario, parse_time

EXIT_INPUT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="site config (TOML)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenario", help="scenario (TOML naming CSV inputs, docs/replay.md)")
    source.add_argument("--journal", help="re-run the period a journal recorded (its events, prices, power)")
    parser.add_argument("--since", default=None, help="with --journal: from this time (ISO-8601 or Unix s)")
    parser.add_argument("--until", default=None, help="with --journal: until this time (ISO-8601 or Unix s)")
    parser.add_argument(
        "--compare",
        nargs="*",
        default=[],
        metavar="OTHER.toml",
        help="more configurations: whole site configs, or overlays of the keys that change",
    )
    parser.add_argument("-o", "--output", default=None, help="write the HTML report here")
    parser.add_argument("--json", default=None, help="write the results (and 15-min table) as JSON here")
    for window in ("10s", "min"):
        parser.add_argument(
            f"--ramp-kw-per-{window}",
            type=_positive_kw,
            default=None,
            help=f"judge every configuration's site import against this ramp limit (kW per {window});"
            f" default: the first configuration's [control] import_ramp_kw_per_{window} that is set",
        )
    parser.add_argument(
        "--fourcp-baselines",
        action="store_true",
        help="beside each configuration, run it with no 4CP window (never) and with exactly the year's"
        " four intervals held (oracle), and score the summer (docs/replay.md, 4CP)",
    )
    parser.add_argument(
        "--log-level", default="error", help="the controller's own log lines (default: error)"
    )


def _positive_kw(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite kW above 0: {text!r}")
    return value


def yardstick(args: argparse.Namespace, configs: list[tuple[str, Config]]) -> RampLimits:
    """One ramp limit for every configuration, so off and on are judged alike: the command line's, else
    the first configuration's (in --config, --compare order) that sets the key."""
    own = [config_ramp_limits(config) for _label, config in configs]
    per_10s = args.ramp_kw_per_10s or next((o.kw_per_10s for o in own if o.kw_per_10s), None)
    per_min = args.ramp_kw_per_min or next((o.kw_per_min for o in own if o.kw_per_min), None)
    return RampLimits(per_10s, per_min)


def _scenario(args: argparse.Namespace, config_path: str) -> Scenario:
    if args.scenario is not None:
        return load_scenario(args.scenario)
    from mullet.daemon.replay.from_journal import scenario_from_journal

    bounds = []
    for flag, text in (("--since", args.since), ("--until", args.until)):
        try:
            bounds.append(None if text is None else parse_time(text))
        except ValueError as exc:
            raise ScenarioError([f"{flag}: {exc}"]) from None
    return scenario_from_journal(args.journal, since_s=bounds[0], until_s=bounds[1])


def run(args: argparse.Namespace) -> int:
    from mullet.daemon.logs import configure_logging

    configure_logging(args.log_level)
    try:
        configs = load_configs(args.config, args.compare)
        scenario = _scenario(args, args.config)
    except (ConfigError, ScenarioError) as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INPUT
    if args.fourcp_baselines and scenario.fourcp is None:
        print(
            "--fourcp-baselines: the scenario has no [fourcp] file of the year's intervals", file=sys.stderr
        )
        return EXIT_INPUT
    results, tables, scores = [], [], []
    limits = yardstick(args, configs)
    for label, config in configs:
        rule = run_rule(config, scenario) if rule_runs(config, scenario) else RuleRun((), (), ())
        columns = {}
        for strategy in iter_columns(args.fourcp_baselines):
            ran = strategy_scenario(config, scenario, strategy, rule)
            replay = Replay(config, ran, ramp_limits=limits).run()
            result = summarize(replay, label if strategy == "rule" else f"{label}-{strategy}")
            if strategy == "rule":
                result["notes"].extend(rule.notes)
                if scenario.fourcp and scenario.fourcp.system_load and not config.fourcp.enabled:
                    result["notes"].append("4CP: [fourcp] is off in this configuration: no rule")
            results.append(result)
            tables.append(interval_table(replay))
            columns[strategy] = (result, tables[-1], ran)
        if scenario.fourcp is not None and (args.fourcp_baselines or rule.decisions):
            score = summer_score(columns, config, scenario, rule)
            columns["rule"][0]["fourcp_summer"] = score
            scores.append((label, score))
    sys.stdout.write(render_text(results))
    for label, score in scores:
        sys.stdout.write("\n" + "\n".join(summer_lines(label, score)) + "\n")
    if args.json is not None:
        payload = [{**r, "intervals": t} for r, t in zip(results, tables, strict=True)]
        Path(args.json).write_text(to_json(payload) + "\n")
    if args.output is not None:
        from mullet.daemon.replay.render_html import render_html

        Path(args.output).write_text(render_html(results, tables), encoding="utf-8")
        print(f"report: {args.output}")
    return 1 if any(r["ai_sla"]["violations"] for r in results) else 0
