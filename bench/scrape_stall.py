"""How late the event loop wakes while a Prometheus scrape runs in the metrics thread.

prometheus_client serves /metrics from its own thread; rendering a 600-group site's series is Python
that holds the GIL, and the loop thread (where the fast path runs) must wait for it. This renders a
registry shaped like the daemon's (`--families` label families x `--groups` groups) in a thread over
and over, pauses `--pause-ms` between renders, and times how late `asyncio.sleep(--sleep-ms)` returns
in the loop thread, once with Python's default 5 ms switch interval and once with the 0.5 ms that
`mulletd run` sets. The process is on one CPU (as mulletd is, deploy/systemd); `--rt` runs the loop
thread SCHED_FIFO as the shipped unit does (the render thread stays normal: reset on fork).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time

from _common import print_header, print_table, reproduce_command, set_realtime, summary
from prometheus_client import CollectorRegistry, Gauge, generate_latest


def registry(families: int, groups: int) -> CollectorRegistry:
    reg = CollectorRegistry()
    for f in range(families):
        gauge = Gauge(f"bench_family_{f}", "a per-group family", ["group"], registry=reg)
        for g in range(groups):
            gauge.labels(f"g{g:04d}").set(g)
    return reg


async def wakes_late(
    reg: CollectorRegistry | None, interval_s: float, args: argparse.Namespace
) -> list[float]:
    """How late each sleep returns, with `reg` rendered over and over in a thread (None: no thread,
    the loop's own timer lateness on this machine, the same-run reference)."""
    sys.setswitchinterval(interval_s)
    stop = threading.Event()

    def scrape() -> None:
        while reg is not None and not stop.is_set():
            generate_latest(reg)
            stop.wait(args.pause_ms / 1000)

    thread = threading.Thread(target=scrape)
    thread.start()
    late_ms = []
    try:
        for _ in range(args.wakes):
            start = time.perf_counter()
            await asyncio.sleep(args.sleep_ms / 1000)
            late_ms.append((time.perf_counter() - start) * 1000 - args.sleep_ms)
    finally:
        stop.set()
        thread.join()
    return late_ms


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", type=int, default=8)
    parser.add_argument("--groups", type=int, default=600)
    parser.add_argument("--wakes", type=int, default=400)
    parser.add_argument("--sleep-ms", type=float, default=3.0)
    parser.add_argument("--pause-ms", type=float, default=5.0)
    parser.add_argument(
        "--rt", type=int, default=20, help="SCHED_FIFO priority of the loop thread; 0: normal"
    )
    args = parser.parse_args()
    command = reproduce_command(
        "scrape_stall.py",
        [(f"--{k.replace('_', '-')}", v) for k, v in vars(args).items()],
    )
    print_header(
        "event loop wake-up while the metrics thread renders a scrape",
        "lateness of asyncio.sleep() in the loop thread, ms",
        command,
    )
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"loop thread scheduling: {set_realtime(args.rt)}")
    reg = registry(args.families, args.groups)
    start = time.perf_counter()
    generate_latest(reg)
    print(
        f"one render of {args.families * args.groups} series: {(time.perf_counter() - start) * 1000:.1f} ms\n"
    )
    rows = []
    p99s = []
    for name, interval_s, rendering in (
        ("ref: no scrape", 0.005, None),
        ("scrape", 0.005, reg),
        ("scrape", 0.0005, reg),
    ):
        late = asyncio.run(wakes_late(rendering, interval_s, args))
        p99s.append(summary(late)[1])
        rows.append([name, f"{interval_s * 1000:g}", len(late), *(f"{v:.2f}" for v in summary(late))])
    print_table(["case", "switch interval ms", "n", "p50", "p99", "max"], rows)
    print()
    print(
        "no verdict: the lateness is bounded by the switch interval, not by the machine's speed. Same run:"
        f" p99 {p99s[1]:.2f} ms at 5 ms vs {p99s[2]:.2f} ms at 0.5 ms ({p99s[1] / p99s[2]:.1f}x);"
        f" the loop's own lateness without a scrape: p99 {p99s[0]:.2f} ms."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
