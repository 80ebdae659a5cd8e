"""A synthetic AI tenant's demand: training jobs that start and stop, checkpoint dips, idle gaps.

Deterministic (a seed), written only where the demand changes, so a month is a few thousand rows and a
replay stops only where something happens. The shape: a job ramps to ~90-97 % of the allocation in
two one-minute steps, holds it with a small drift every 15 minutes, dips to ~35-50 % for 1-3 minutes
at each checkpoint (every 30-60 minutes), and ends; between jobs the cluster idles at ~15-20 %
(inference and housekeeping). Jobs run 6 hours to 4 days; gaps last 1 to 12 hours.

`python -m mullet.simulators.ai_trace --reserved-kw 2000 --start 2023-09-01T00:00:00-05:00 --days 30
--seed 1 > ai-a.csv` writes `time,kw`, the format `mulletd replay` reads (docs/replay.md).

`--swings` writes the faster shape an absorber is judged on instead (`swing_events`): crashes and stops
that drop tens of percent within seconds, checkpoint dips of tens of seconds, staged restarts, in
one-second rows where it moves. The default shape is unchanged (the shipped month's traces are it).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

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


# ---- swings: what an absorber is judged on (issue 23) ---------------------------------------------

SwingKind = Literal["idle", "start", "restart", "drift", "dip", "crash", "stop"]


@dataclass(frozen=True, slots=True)
class Swing:
    """One change of a job's demand: `kind`, from `from_kw` to `to_kw` (a dip: down to `to_kw` and back
    to `from_kw`), and the rows it writes, (whole seconds from the start, kW)."""

    kind: SwingKind
    from_kw: float
    to_kw: float
    rows: tuple[tuple[int, float], ...]

    @property
    def start_s(self) -> int:
        return self.rows[0][0]

    @property
    def end_s(self) -> int:
        """When its last row applies."""
        return self.rows[-1][0]


def _line(start_s: int, span_s: int, from_kw: float, to_kw: float) -> list[tuple[int, float]]:
    """From `from_kw` (in force before `start_s`) to `to_kw` in `span_s` one-second rows."""
    return [
        (start_s + n - 1, round(from_kw + (to_kw - from_kw) * n / span_s, 1)) for n in range(1, span_s + 1)
    ]


def swing_events(reserved_kw: float, duration_s: float, seed: int) -> list[Swing]:
    """Training jobs with the swings a grid operator sees, at second resolution.

    A job starts from idle (15-20 % of the allocation) in one step, or staged in 2-3 steps 2-5 s apart
    (data loading, then all ranks), to 88-97 %; drifts by up to 1 % every 15 minutes; dips to 35-55 %
    for 15-60 s at each checkpoint (every 20-60 minutes; down in 1-2 s, back in 1-3 s). It ends after
    1-10 hours: a crash (60 %) drops to idle in 1-3 s and the scheduler restarts the job from its last
    checkpoint 1-10 minutes later; a clean stop ramps down in 3-8 s and the cluster idles 20 minutes
    to 3 hours before the next job. Deterministic for a seed.
    """
    rng = random.Random(seed)
    kw = round(reserved_kw * rng.uniform(0.15, 0.20), 1)
    events = [Swing("idle", kw, kw, ((0, kw),))]
    t = round(rng.uniform(5, 30) * MIN)
    restart = False
    while t < duration_s:
        level = rng.uniform(0.88, 0.97)
        to_kw = round(reserved_kw * level, 1)
        stages = rng.choice((1, 1, 2, 3))
        rows = []
        for n in range(1, stages + 1):
            rows.append((t, round(kw + (to_kw - kw) * n / stages, 1)))
            t += rng.randint(2, 5) if n < stages else 1
        events.append(Swing("restart" if restart else "start", kw, to_kw, tuple(rows)))
        kw = to_kw
        job_end = t + round(rng.uniform(1, 10) * HOUR)
        next_drift, next_checkpoint = t + 15 * 60, t + round(rng.uniform(20, 60) * MIN)
        while True:
            t = min(next_drift, next_checkpoint, job_end)
            if t >= duration_s:
                return events
            if t == job_end:
                break
            if t == next_checkpoint:
                depth_kw = round(reserved_kw * rng.uniform(0.35, 0.55), 1)
                down_s, hold_s, up_s = rng.randint(1, 2), rng.randint(15, 60), rng.randint(1, 3)
                rows = _line(t, down_s, kw, depth_kw) + _line(t + down_s + hold_s, up_s, depth_kw, kw)
                events.append(Swing("dip", kw, depth_kw, tuple(rows)))
                t += down_s + hold_s + up_s
                next_checkpoint = t + round(rng.uniform(20, 60) * MIN)
                next_drift, job_end = max(next_drift, t), max(job_end, t)
            else:
                level = min(0.98, max(0.85, level + rng.uniform(-0.01, 0.01)))
                to_kw = round(reserved_kw * level, 1)
                events.append(Swing("drift", kw, to_kw, ((t, to_kw),)))
                kw = to_kw
                next_drift = t + 15 * 60
        idle_kw = round(reserved_kw * rng.uniform(0.15, 0.20), 1)
        restart = rng.random() < 0.6
        span_s = rng.randint(1, 3) if restart else rng.randint(3, 8)
        end = tuple(_line(t, span_s, kw, idle_kw))
        events.append(Swing("crash" if restart else "stop", kw, idle_kw, end))
        t += span_s + round(rng.uniform(1, 10) * MIN if restart else rng.uniform(20, 180) * MIN)
        kw = idle_kw
    return events


def swing_rows(events: list[Swing]) -> Iterator[tuple[float, float]]:
    """(seconds from the start, kW) at every change, in order, repeats dropped."""
    last_kw = None
    for event in events:
        for t, kw in event.rows:
            if kw != last_kw:
                yield float(t), kw
                last_kw = kw


def smoothed(rows: Iterator[tuple[float, float]], ramp_s: int) -> Iterator[tuple[float, float]]:
    """The rows as GPU-side smoothing (power caps, rack storage) would pass them on: every change spread
    over `ramp_s` seconds in one-second rows on the straight line, a change that comes sooner starting
    from wherever the last one had got to. What is left is the slower part, the part mining can take."""
    last_kw: float | None = None
    planned: list[tuple[float, float]] = []
    for t_s, kw in rows:
        for at_s, planned_kw in planned:
            if at_s >= t_s:
                break
            if planned_kw != last_kw:
                yield at_s, planned_kw
                last_kw = planned_kw
        if last_kw is None:
            yield t_s, kw
            last_kw, planned = kw, []
            continue
        start_kw, span = last_kw, max(1, ramp_s)
        planned = [(t_s + n - 1, round(start_kw + (kw - start_kw) * n / span, 1)) for n in range(1, span + 1)]
    for at_s, planned_kw in planned:
        if planned_kw != last_kw:
            yield at_s, planned_kw
            last_kw = planned_kw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reserved-kw", type=float, required=True)
    parser.add_argument("--start", required=True, help="ISO-8601 with a UTC offset")
    parser.add_argument("--days", type=float, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--smooth-s",
        type=int,
        default=0,
        help="spread every change over this many seconds (GPU-side smoothing; 0: as generated)",
    )
    parser.add_argument(
        "--swings",
        action="store_true",
        help="second-resolution job starts, checkpoint dips, crashes and stops (swing_events)",
    )
    args = parser.parse_args(argv)
    start = datetime.fromisoformat(args.start)
    if start.tzinfo is None:
        parser.error("--start needs a UTC offset")
    out = sys.stdout
    out.write("time,kw\n")
    duration_s = args.days * 86_400.0
    rows = (
        swing_rows(swing_events(args.reserved_kw, duration_s, args.seed))
        if args.swings
        else demand_steps(args.reserved_kw, duration_s, args.seed)
    )
    if args.smooth_s > 1:
        rows = smoothed(rows, args.smooth_s)
    for offset_s, kw in rows:
        out.write(f"{(start + timedelta(seconds=round(offset_s))).isoformat()},{kw}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
