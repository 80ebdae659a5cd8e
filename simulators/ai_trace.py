"""A synthetic AI tenant's demand: training jobs that start and stop, checkpoint dips, idle gaps.

Deterministic (a seed), written only where the demand changes, so a month is a few thousand rows and a
replay stops only where something happens. The shape: a job ramps to ~90-97 % of the allocation in
two one-minute steps, holds it with a small drift every 15 minutes, dips to ~35-50 % for 1-3 minutes
at each checkpoint (every 30-60 minutes), and ends; between jobs the cluster idles at ~15-20 %
(inference and housekeeping). Jobs run 6 hours to 4 days; gaps last 1 to 12 hours.

`python -m mullet.simulators.ai_trace --reserved-kw 2000 --start 2023-09-01T00:00:00-05:00 --days 30
--seed 1 > ai-a.csv` writes `time,kw`, the format `mulletd replay` reads (docs/replay.md).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta

MIN = 60.0
HOUR = 3600.0


def demand_steps(reserved_kw: float, duration_s: float, seed: int) -> Iterator[tuple[float, float]]:
    """(seconds from the start, kW) at every change, the first at 0."""
    rng = random.Random(seed)
    t = 0.0
    running = rng.random() < 0.5
    while t < duration_s:
        if not running:
            idle_kw = reserved_kw * rng.uniform(0.15, 0.20)
            yield t, round(idle_kw, 1)
            t += rng.uniform(1, 12) * HOUR
            running = True
            continue
        job_end = t + rng.uniform(6, 96) * HOUR
        level = rng.uniform(0.90, 0.97)
        yield t, round(reserved_kw * level * 0.5, 1)  # the job loads its data, then all ranks run
        t += MIN
        next_checkpoint = t + rng.uniform(30, 60) * MIN
        while t < min(job_end, duration_s):
            if t >= next_checkpoint:
                yield t, round(reserved_kw * rng.uniform(0.35, 0.50), 1)
                t += rng.uniform(1, 3) * MIN
                next_checkpoint = t + rng.uniform(30, 60) * MIN
            level = min(0.98, max(0.85, level + rng.uniform(-0.01, 0.01)))
            yield t, round(reserved_kw * level, 1)
            t += 15 * MIN
        running = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reserved-kw", type=float, required=True)
    parser.add_argument("--start", required=True, help="ISO-8601 with a UTC offset")
    parser.add_argument("--days", type=float, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start)
    if start.tzinfo is None:
        parser.error("--start needs a UTC offset")
    out = sys.stdout
    out.write("time,kw\n")
    for offset_s, kw in demand_steps(args.reserved_kw, args.days * 86_400.0, args.seed):
        out.write(f"{(start + timedelta(seconds=round(offset_s))).isoformat()},{kw}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
