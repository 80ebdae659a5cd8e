"""`mulletd`: the site daemon, check-config, simulate, demo, report, export, replay, status, edge agents
and the fleet."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

from mullet.daemon.config import Config, ConfigError, load_config
from mullet.policies.scoring import BASELINE_METHODS

EXIT_CONFIG = 2
EXIT_LEADERSHIP_LOST = 3  # [ha]: the leader lease could not be kept (docs/fleet.md section 6)
# The journal cannot be opened, is corrupt or read-only (EX_IOERR): a restart cannot fix it, so the unit
# lists it in RestartPreventExitStatus= (docs/operations.md section 1).
EXIT_JOURNAL = 74


def _load_or_exit(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}" if not problem.startswith(path) else problem, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run `main(stop)`; SIGTERM/SIGINT set `stop` so the coroutine can shut down cleanly."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        return await main(stop)

    return asyncio.run(runner())


def cmd_check_config(args: argparse.Namespace) -> int:
    from mullet.daemon.records.journal import path_problem

    config = _load_or_exit(args.file)
    journal_problem = path_problem(config.journal.path)
    if journal_problem is not None:
        print(f"{args.file}: journal.path: {journal_problem}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"ok: {config.summary()}")
    lines = config.stage_budget_lines()
    if config.fourcp.enabled:  # the files read as the daemon would (imported only then: the site stack)
        import time

        from mullet.daemon.site.fourcp import check_lines

        lines = [*lines, *check_lines(config.fourcp, time.time())]
    for ok, line in lines:
        if ok:
            print(line)
        else:
            print(f"warning: {line}", file=sys.stderr)
    return 0


def _real_time_setup() -> None:
    """Keep other threads' Python from holding the loop off, and say how the loop is scheduled.

    The loop thread waits for the GIL while another thread runs Python, and rendering a Prometheus
    scrape of a 600-group site is ~23 ms of it. bench/scrape_stall.py: with Python's default 5 ms
    switch interval the loop woke p50 5.1 / p99 6.3 ms late during scrapes, with 0.5 ms p50 0.6 /
    p99 0.9 ms. SCHED_FIFO and the core come from the systemd unit (deploy/systemd/mulletd.service)."""
    import os

    import structlog

    sys.setswitchinterval(0.0005)
    policy = {os.SCHED_FIFO: "fifo", os.SCHED_RR: "rr"}.get(os.sched_getscheduler(0), "normal")
    structlog.get_logger("mullet.cli").info(
        "scheduling",
        policy=policy,
        priority=os.sched_getparam(0).sched_priority,
        cpus=sorted(os.sched_getaffinity(0)),
        switch_interval_ms=0.5,
    )


def freeze_heap() -> None:
    """Put what start-up built out of the collector's reach, once the process is set up.

    A full (generation 2) collection walks every tracked object, start-up's modules, models and
    connections included: ~22 ms on this VM for the trip bench's process, and it can land between a
    frequency sample and its trip or among a cut's acknowledgements (bench/trip_latency.py: three
    in 100 trips, the tail of (3)). After gc.freeze() they took ~0.2 ms. Objects that live from then
    on are collected as before; cyclic garbage among the frozen ones would never be, and start-up
    leaves none that matters."""
    import gc
    import time

    import structlog

    started_s = time.perf_counter()
    gc.collect()
    gc.freeze()
    structlog.get_logger("mullet.cli").info(
        "heap frozen",
        objects=gc.get_freeze_count(),
        collect_ms=round((time.perf_counter() - started_s) * 1000, 1),
    )


def cmd_run(args: argparse.Namespace) -> int:
    from mullet.daemon import fds
    from mullet.daemon.logs import configure_logging
    from mullet.daemon.notify import Notifier
    from mullet.daemon.pair.lease import LeadershipLost
    from mullet.daemon.records.journal import JournalError
    from mullet.daemon.secrets import SecretError
    from mullet.daemon.site.app import Daemon

    config = _load_or_exit(args.config)
    configure_logging(args.log_level, library_level=args.library_log_level)
    _real_time_setup()
    fds.log_budget(config, *fds.raise_nofile_limit())

    async def main(stop: asyncio.Event) -> int:
        try:
            daemon = Daemon(config, notifier=Notifier.from_environment(), config_path=args.config)
        except SecretError as exc:
            print(f"{args.config}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except JournalError as exc:
            print(f"mulletd: {exc}", file=sys.stderr)
            return EXIT_JOURNAL
        # SIGHUP: re-read the config; a bad one is logged and counted, and control goes on unchanged.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, daemon.reload)
        task = asyncio.create_task(daemon.run())
        stopper = asyncio.create_task(stop.wait())
        ready = asyncio.create_task(daemon.ready.wait())
        ready.add_done_callback(lambda waited: freeze_heap() if not waited.cancelled() else None)
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        daemon.stop()
        stopper.cancel()
        ready.cancel()
        lost = False
        try:
            await task
        except* LeadershipLost:
            lost = True  # [ha]: commanding stopped; systemd restarts us as the standby
        return EXIT_LEADERSHIP_LOST if lost else 0

    return _run_until_signal(main)


def cmd_simulate(args: argparse.Namespace) -> int:
    from mullet.daemon.logs import configure_logging
    from mullet.daemon.site.simulated import simulate

    config = _load_or_exit(args.config)
    configure_logging(args.log_level)

    async def main(stop: asyncio.Event) -> int:
        task = asyncio.create_task(simulate(config))
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0

    return _run_until_signal(main)


def cmd_demo(args: argparse.Namespace) -> int:
    from mullet.daemon.logs import configure_logging
    from mullet.daemon.site.demo import run_demo

    config_path = Path(args.config) if args.config else Path(__file__).with_name("site.example.toml")
    config = _load_or_exit(str(config_path))
    configure_logging(args.log_level)

    async def main(stop: asyncio.Event) -> int:
        return await run_demo(config, duration_s=args.duration, broker_url=args.broker, stop=stop)

    return _run_until_signal(main)


def cmd_agent(args: argparse.Namespace) -> int:
    from mullet.daemon.agents.config import AsicAgentConfig, GpuAgentConfig, load_agent_config
    from mullet.daemon.logs import configure_logging

    config: AsicAgentConfig | GpuAgentConfig
    try:
        if args.kind == "asic":
            config = load_agent_config(AsicAgentConfig, args.config)
        else:
            config = load_agent_config(GpuAgentConfig, args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(
                f"{args.config}: {problem}" if not problem.startswith(args.config) else problem,
                file=sys.stderr,
            )
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(args.log_level)
    agent_type: Any
    try:
        if isinstance(config, AsicAgentConfig):
            from mullet.daemon.agents.asic import AsicAgent

            agent_type = AsicAgent
        else:
            from mullet.daemon.agents.gpu import GpuAgent

            agent_type = GpuAgent
    except ModuleNotFoundError as exc:
        _exit_on_missing_extra(exc)

    async def main(stop: asyncio.Event) -> int:
        try:
            agent: Any = agent_type(config)  # imports the miner backend the config names
        except ModuleNotFoundError as exc:
            _exit_on_missing_extra(exc)
        task = asyncio.create_task(agent.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await agent.close()  # online = 0 before the clean disconnect (which fires no will)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0

    return _run_until_signal(main)


def _exit_on_missing_extra(exc: ModuleNotFoundError) -> NoReturn:
    """A part whose optional library is not installed: say which extra to install (exit 2)."""
    from mullet.drivers.extras import MissingExtra, explain

    problem = str(exc) if isinstance(exc, MissingExtra) else explain(exc)
    if problem is None:
        raise exc  # not an extra's module: a packaging bug, shown with its traceback
    print(f"mulletd: {problem}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG) from None


def _journal_of(args: argparse.Namespace, command: str) -> tuple[Config | None, str]:
    """`--journal PATH`, else the journal of `--config FILE` (and that config); exit 2 without either."""
    config = _load_or_exit(args.config) if args.config else None
    journal_path = args.journal or (config.journal.path if config is not None else None)
    if journal_path is None:
        print(f"mulletd {command}: give --config FILE or --journal PATH", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    return config, journal_path


def cmd_report(args: argparse.Namespace) -> int:
    from mullet.daemon.records.report import ReportError, build_report
    from mullet.daemon.records.report_render import render
    from mullet.daemon.records.report_text import outcome

    config, journal_path = _journal_of(args, "report")
    zone = config.site.timezone if config is not None else "UTC"  # --journal alone: UTC
    if args.season is not None:
        return _report_season(journal_path, args, zone, config)
    try:
        report = build_report(journal_path, args.event, baseline=args.baseline, config=config)
    except ReportError as exc:
        print(f"mulletd report: {exc}", file=sys.stderr)
        return 1
    text = render(report, args.format, timezone=zone)
    if args.output:
        Path(args.output).write_text(text)
        print(f"{args.output}: {outcome(report)}: {'; '.join(report.verdict)}")
    else:
        sys.stdout.write(text)
    return 0


def _year(text: str) -> int:
    year = int(text)
    if not 1970 <= year <= 9998:
        raise argparse.ArgumentTypeError(f"{text}: a year from 1970 to 9998")
    return year


def _report_season(journal_path: str, args: argparse.Namespace, zone_name: str, config: Config | None) -> int:
    from zoneinfo import ZoneInfo

    from mullet.daemon.records.report import ReportError
    from mullet.daemon.records.season import SeasonError, season_reports, write_season

    if args.format != "html" or args.output:
        print("mulletd report: --season writes HTML pages into --out-dir", file=sys.stderr)
        return EXIT_CONFIG
    zone = ZoneInfo(zone_name)
    try:
        unreadable: list[tuple[str, str]] = []
        reports = season_reports(journal_path, args.season, zone, config, unreadable)
    except (ReportError, SeasonError) as exc:
        print(f"mulletd report: {exc}", file=sys.stderr)
        return 1
    page = write_season(reports, args.season, zone, args.out_dir, unreadable)
    for event_id, why in unreadable:
        print(f"mulletd report: {event_id!r} left out of the season: {why}", file=sys.stderr)
    drills = sum(1 for r in reports if r.drill)
    print(f"{page}: {len(reports) - drills} grid events, {drills} drills, one report each beside it")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mullet.daemon.records.export import DEFAULT_MAX_GAP_S, intervals, journal_samples, write_csv
    from mullet.daemon.records.report import ReportError, open_journal
    from mullet.daemon.replay.scenario import parse_time

    config, journal_path = _journal_of(args, "export")
    try:
        from_s, to_s = parse_time(args.from_), parse_time(args.to)
    except ValueError as exc:
        print(f"mulletd export: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    interval_s = {"15m": 900.0, "1m": 60.0}[args.interval]
    if to_s <= from_s:
        print("mulletd export: --to must be after --from", file=sys.stderr)
        return EXIT_CONFIG
    # A sample holds until the next; a silence longer than this is a gap (the journal writes one a
    # journal.site_power_every_s, 1 s by default).
    max_gap_s = (
        max(DEFAULT_MAX_GAP_S, 2.5 * config.journal.site_power_every_s) if config else DEFAULT_MAX_GAP_S
    )
    try:
        db = open_journal(journal_path)
    except ReportError as exc:
        print(f"mulletd export: {exc}", file=sys.stderr)
        return 1
    try:
        rows = intervals(journal_samples(db, from_s, to_s, max_gap_s), from_s, to_s, interval_s, max_gap_s)
        if args.output:
            with open(args.output, "w", newline="") as out:
                count = write_csv(rows, out)
            print(f"{args.output}: {count} intervals of {args.interval}, interval ending, UTC")
        else:
            write_csv(rows, sys.stdout)
    finally:
        db.close()
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from mullet.daemon.records.drill_cli import DrillCliError, cancel_drill, parse_duration_s, run_drill
    from mullet.daemon.replay.scenario import parse_time
    from mullet.daemon.secrets import read_secret

    url, token, journal_path, config = args.url, args.token, None, None
    if args.config is not None:
        config = _load_or_exit(args.config)
        journal_path = config.journal.path
        section = config.http_api
        if url is None:
            if not section.enabled:
                print(f"mulletd drill: [http_api] is not enabled in {args.config}", file=sys.stderr)
                return EXIT_CONFIG
            url = f"http://{section.host}:{section.port}"
        if token is None:
            token = read_secret(file=section.token_file, credential=section.token_credential)
    if url is None:
        print("mulletd drill: give --config FILE or --url URL", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.cancel is not None:
            return cancel_drill(url=url, token=token, drill_id=args.cancel)
        if args.program is None or args.kw is None:
            print("mulletd drill: --program and --kw are required (or --cancel ID)", file=sys.stderr)
            return EXIT_CONFIG
        request = {
            "v": 1,
            "program": args.program,
            "kw": args.kw,
            "duration_s": parse_duration_s(args.duration),
            "dry_run": args.dry_run,
        }
        if args.at is not None:
            request["at_s"] = parse_time(args.at)
    except ValueError as exc:
        print(f"mulletd drill: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return run_drill(
            url=url,
            token=token,
            request=request,
            journal_path=journal_path,
            config=config,
            fmt=args.format,
            output=args.output,
            wait=not args.no_wait,
        )
    except DrillCliError as exc:
        print(f"mulletd drill: {exc}", file=sys.stderr)
        return 1


def cmd_replay(args: argparse.Namespace) -> int:
    from mullet.daemon.replay.command import run

    return run(args)


def cmd_status(args: argparse.Namespace) -> int:
    from mullet.daemon.records.status_cli import run_status

    url, token = args.url, args.token
    if url is None:
        if args.config is None:
            print("mulletd status: give --config FILE or --url URL", file=sys.stderr)
            return EXIT_CONFIG
        section = _load_or_exit(args.config).http_api
        if not section.enabled:
            print(f"mulletd status: [http_api] is not enabled in {args.config}", file=sys.stderr)
            return EXIT_CONFIG
        url = f"http://{section.host}:{section.port}"
    if args.watch is not None and args.watch <= 0:
        print("mulletd status: --watch takes a period > 0 s", file=sys.stderr)
        return EXIT_CONFIG
    return run_status(url, token, watch_s=args.watch)


def cmd_fleet(args: argparse.Namespace) -> int:
    from mullet.daemon.fleet.config import FleetConfig, load_fleet_config
    from mullet.daemon.fleet.dispatcher import FleetDispatcher
    from mullet.daemon.logs import configure_logging

    try:
        config: FleetConfig = load_fleet_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            where = problem if problem.startswith(args.config) else f"{args.config}: {problem}"
            print(where, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(args.log_level)

    async def main(stop: asyncio.Event) -> int:
        dispatcher = FleetDispatcher(config)
        task = asyncio.create_task(dispatcher.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        dispatcher.stop()
        stopper.cancel()
        await task
        return 0

    return _run_until_signal(main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mulletd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the site daemon")
    run.add_argument("--config", required=True, help="site config (TOML)")
    run.add_argument("--log-level", default="info")
    run.add_argument(
        "--library-log-level",
        default="off",
        choices=["off", "debug", "info", "warning", "error"],
        help="let pymodbus' and paho's own log lines through from this level (default off)",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config; exit 2 naming each bad key")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    simulate = sub.add_parser("simulate", help="run the simulated site a config describes")
    simulate.add_argument("--config", required=True)
    simulate.add_argument("--log-level", default="info")
    simulate.set_defaults(func=cmd_simulate)

    demo = sub.add_parser("demo", help="embedded broker + simulated site + daemon + a scripted grid event")
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds and report")
    demo.add_argument(
        "--broker", default=None, help="use this broker (mqtt://host:port) instead of an embedded one"
    )
    demo.add_argument("--config", default=None, help="site config (default: the packaged example site)")
    demo.add_argument("--log-level", default="warning")
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser(
        "report", help="compliance report of one grid event or a season, from the journal"
    )
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--event", help="the grid event's (or drill's) id")
    which.add_argument(
        "--season", type=_year, metavar="YEAR", help="every event and drill of a calendar year (site time)"
    )
    report.add_argument("--out-dir", default=".", help="--season: where the pages are written")
    report.add_argument("--config", default=None, help="site config (for the journal path)")
    report.add_argument("--journal", default=None, help="journal file (instead of --config)")
    report.add_argument("--format", choices=["html", "csv", "json", "text"], default="html")
    report.add_argument(
        "--baseline",
        choices=BASELINE_METHODS,
        default=None,
        help="override the program's baseline method (and the config's [[programs]] baseline)",
    )
    report.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    report.set_defaults(func=cmd_report)

    export = sub.add_parser(
        "export", help="interval data (kWh, mean kW) of site, mining and AI as CSV, from the journal"
    )
    export.add_argument("--config", default=None, help="site config (for the journal path)")
    export.add_argument("--journal", default=None, help="journal file (instead of --config)")
    export.add_argument("--from", dest="from_", required=True, help="ISO-8601 with an offset, or Unix s")
    export.add_argument("--to", required=True, help="ISO-8601 with an offset, or Unix s (exclusive)")
    export.add_argument("--interval", choices=["15m", "1m"], default="15m")
    export.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    export.set_defaults(func=cmd_export)

    drill = sub.add_parser(
        "drill", help="a test deployment on the live daemon (or its dry run), then its scorecard"
    )
    drill.add_argument("--config", default=None, help="site config (HTTP API address, token, journal)")
    drill.add_argument("--url", default=None, help="the daemon's HTTP API (instead of --config)")
    drill.add_argument("--token", default=None, help="bearer token (default: the config's token file)")
    drill.add_argument("--program", default=None, help="the program whose rules the drill tests, e.g. ERS-10")
    drill.add_argument("--kw", type=float, default=None, help="reduction below the meter at deployment, kW")
    drill.add_argument("--at", default=None, help="start: ISO-8601 with an offset, or Unix s (default: now)")
    drill.add_argument("--duration", default="1h", help="how long it holds: 90s, 15m, 1h (default 1h)")
    drill.add_argument("--dry-run", action="store_true", help="plan it and say what would be shed; no action")
    drill.add_argument("--no-wait", action="store_true", help="return once deployed; score it later")
    drill.add_argument(
        "--cancel", default=None, metavar="ID", help="end a drill in force or drop a scheduled one"
    )
    drill.add_argument("--format", choices=["text", "html", "csv", "json"], default="text")
    drill.add_argument("--output", "-o", default=None, help="write the scorecard here instead of stdout")
    drill.set_defaults(func=cmd_drill)

    replay = sub.add_parser(
        "replay",
        help="backtest: the site's controller and simulated physics over recorded or scenario inputs",
    )
    from mullet.daemon.replay.command import add_arguments as replay_arguments

    replay_arguments(replay)
    replay.set_defaults(func=cmd_replay)

    status = sub.add_parser("status", help="the live daemon's site, obligations and groups (HTTP API)")
    status.add_argument("--config", default=None, help="site config (for the HTTP API address and token)")
    status.add_argument("--url", default=None, help="the daemon's HTTP API, e.g. http://127.0.0.1:11581")
    status.add_argument("--token", default=None, help="bearer token, where reads need one")
    status.add_argument(
        "--watch", nargs="?", type=float, const=2.0, default=None, metavar="S", help="refresh every S s"
    )
    status.set_defaults(func=cmd_status)

    agent = sub.add_parser("agent", help="run an edge agent: a mining group's or an AI node's controller")
    agent.add_argument("kind", choices=["asic", "gpu"], help="asic: miners (pyasic or asic-rs); gpu: NVML")
    agent.add_argument("--config", required=True, help="agent config (TOML, docs/agents.md)")
    agent.add_argument("--log-level", default="info")
    agent.set_defaults(func=cmd_agent)
    fleet = sub.add_parser("fleet", help="split portfolio obligations across site daemons (docs/fleet.md)")
    fleet.add_argument("--config", required=True, help="fleet config (TOML)")
    fleet.add_argument("--log-level", default="info")
    fleet.set_defaults(func=cmd_fleet)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
