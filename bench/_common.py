"""Helpers shared by the bench scripts: percentiles, the machine header, the reproduce line, tables.

Figures are medians and p99s. p99 is nearest-rank (the ceil(0.99 n)-th smallest sample), so with
fewer than 100 samples it is the maximum; the scripts say so where that applies.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in (0, 100]."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float]) -> tuple[float, float, float]:
    """(median, p99, max)."""
    if not samples:
        return math.nan, math.nan, math.nan
    return statistics.median(samples), percentile(samples, 99), max(samples)


def p99_note(n: int) -> str:
    if n >= 100:
        return f"p99 = nearest rank over {n} samples"
    return f"p99 = nearest rank over {n} samples, which for n < 100 is the maximum"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + (" (uncommitted changes)" if dirty else "")


def reproduce_command(script: str, options: Sequence[tuple[str, object]]) -> str:
    """The command line that reruns this benchmark with every effective option spelled out."""
    parts = [".venv/bin/python", f"bench/{script}"]
    for flag, value in options:
        if isinstance(value, bool):
            if value:
                parts.append(flag)
        elif isinstance(value, list | tuple):
            parts += [flag, *(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def print_header(title: str, measures: str, command: str) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(f"== {title} ==")
    print(f"measures: {measures}")
    print(
        f"machine:  nproc={os.cpu_count()} ({_cpu_model()}), python {platform.python_version()}"
        f" ({sys.implementation.name}), {platform.system()} {platform.release()}"
    )
    print(f"date:     {now}, git {_git_revision()}")
    print(f"command:  {command}")
    print()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Right-aligned columns; the first column is left-aligned."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        out = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def set_realtime(priority: int) -> str:
    """Give the calling thread (a bench's event loop) what deploy/systemd/mulletd.service gives
    mulletd: SCHED_FIFO at `priority` with reset-on-fork (the processes and threads it starts run as
    normal tasks); 0 keeps normal scheduling, for comparison. Returns what it got, for the output."""
    if not priority:
        return "normal (SCHED_OTHER): --rt 0"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority))
    except PermissionError:
        return f"normal (SCHED_OTHER): SCHED_FIFO {priority} refused, needs CAP_SYS_NICE or RLIMIT_RTPRIO"
    return f"SCHED_FIFO priority {priority}, reset on fork (as deploy/systemd/mulletd.service)"
