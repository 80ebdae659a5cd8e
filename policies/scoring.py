"""How a grid program scores a site's response: baseline, settlement intervals, performance factor.

The scoring follows ERCOT ERS as we read it (docs/programs.md, docs/reports.md): 15-minute intervals
aligned to the clock, the ramp period (the program's deadline after deployment) left out, each
interval's performance factor = delivered reduction / obligated reduction capped to [0, 1], the event's
factor the duration-weighted mean, pass at >= 0.95. Check the current term's Technical Requirements
before filing a report with a market operator. Pure: daemon/records/report.py reads the journal and calls
`score`.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

BaselineMethod = Literal["pre_notice_intervals", "meter_before_event"]
BASELINE_METHODS: tuple[BaselineMethod, ...] = ("pre_notice_intervals", "meter_before_event")


@dataclass(frozen=True, slots=True)
class ReportRule:
    """How a program is scored: its baseline, its settlement interval and its pass mark."""

    baseline: BaselineMethod
    interval_s: float = 900.0
    baseline_intervals: int = 4  # pre_notice_intervals: how many whole intervals before the notice
    pass_factor: float = 0.95
    source: str = ""


# ERS is scored on 15-minute interval data against a baseline with performance factor >= 0.95
# (ERCOT ERS Technical Requirements; docs/programs.md). The other programs are judged against the
# meter just before deployment, which is what the daemon itself fixes as a `reduce` baseline.
_ERS = ReportRule(
    "pre_notice_intervals",
    source="ERCOT ERS: 15-min intervals, baseline from the intervals before the deployment notice, "
    "event performance factor >= 0.95",
)
_DEFAULT = ReportRule(
    "meter_before_event",
    source="meter before deployment; 15-min intervals; performance factor >= 0.95",
)
RULES: dict[str, ReportRule] = {"ers-10": _ERS, "ers-30": _ERS}


def rule_for(program: str) -> ReportRule:
    return RULES.get(program.casefold(), _DEFAULT)


@dataclass(frozen=True, slots=True)
class Sample:
    wall_s: float
    kw: float


@dataclass(frozen=True, slots=True)
class Interval:
    start_s: float  # the part of the settlement interval inside the scored window
    end_s: float
    samples: int
    average_kw: float | None  # None: no sample in it (unknown, never zero)
    delivered_kw: float | None
    performance_factor: float  # 0 when unknown
    shortfall_kw: float | None
    shortfall_kwh: float | None


@dataclass(frozen=True, slots=True)
class Score:
    baseline_kw: float | None
    baseline_detail: str
    target_kw: float | None
    obligated_kw: float | None
    scored_from_s: float
    scored_until_s: float
    time_to_target_s: float | None
    met_deadline: bool | None
    intervals: list[Interval]
    performance_factor: float | None
    shortfall_kwh: float | None
    max_shortfall_kw: float | None
    passed: bool
    verdict: list[str]  # every reason for a fail, or the pass; notes (an event still in force) after
    sample_spacing_s: float | None


def score(
    *,
    kind: str,
    kw: float,
    fixed_baseline_kw: float | None,
    notice_s: float,
    deploy_s: float,
    deadline_s: float | None,
    end_s: float,
    in_progress: bool,
    samples: Sequence[Sample],
    rule: ReportRule,
    method: BaselineMethod,
) -> Score:
    """Score an obligation (`limit`: import <= kw; otherwise a `reduce`: kw below the baseline) from
    the site power `samples` (in time order) between its deployment and `end_s`. `fixed_baseline_kw`:
    the baseline fixed at acceptance, if any (what `meter_before_event` uses first)."""
    verdict: list[str] = []
    baseline_kw, baseline_detail = baseline(method, rule, samples, notice_s, deploy_s, fixed_baseline_kw)
    if kind == "limit":
        target_kw: float | None = kw
        obligated_kw = None if baseline_kw is None else baseline_kw - kw
    else:  # reduce: kw below the baseline
        target_kw = None if baseline_kw is None else baseline_kw - kw
        obligated_kw = kw

    time_to_target_s = None
    if target_kw is not None:
        for sample in samples:
            if sample.wall_s >= deploy_s and sample.wall_s <= end_s and sample.kw <= target_kw:
                time_to_target_s = sample.wall_s - deploy_s
                break
    spacing_s = median_spacing(samples)
    met_deadline: bool | None = None
    if deadline_s is not None and spacing_s is not None and deadline_s < spacing_s:
        verdict.append(
            f"deadline {deadline_s:g} s is finer than the journal's site power samples "
            f"({spacing_s:g} s apart): time to target cannot be judged from them"
        )
    elif deadline_s is not None:
        met_deadline = time_to_target_s is not None and time_to_target_s <= deadline_s
        if not met_deadline:
            reached = "never" if time_to_target_s is None else f"after {time_to_target_s:.1f} s"
            verdict.append(f"target reached {reached}, deadline {deadline_s:g} s")

    # The ramp (the program's deadline) is not scored; the intervals after it are.
    scored_from_s = deploy_s + (deadline_s or 0.0)
    scored_until_s = end_s
    scored = intervals(samples, scored_from_s, scored_until_s, rule.interval_s, target_kw, baseline_kw)
    performance_factor = shortfall_kwh = max_shortfall_kw = None
    if baseline_kw is None:
        verdict.append(f"no baseline: {baseline_detail}")
    elif not scored:
        verdict.append("no interval to score: the event ended within its ramp period")
    else:
        total_s = sum(i.end_s - i.start_s for i in scored)
        performance_factor = sum(i.performance_factor * (i.end_s - i.start_s) for i in scored) / total_s
        gaps = [i for i in scored if i.average_kw is None]
        if gaps:
            verdict.append(f"{len(gaps)} interval(s) without site power samples count as not delivered")
        else:
            shortfall_kwh = sum(i.shortfall_kwh or 0.0 for i in scored)
            max_shortfall_kw = max(i.shortfall_kw or 0.0 for i in scored)
        if performance_factor < rule.pass_factor:
            verdict.append(f"performance factor {performance_factor:.3f} < {rule.pass_factor}")
    passed = not verdict and performance_factor is not None
    if in_progress:
        verdict.append("event still in force: scored up to the journal's newest entry")
    return Score(
        baseline_kw=baseline_kw,
        baseline_detail=baseline_detail,
        target_kw=target_kw,
        obligated_kw=obligated_kw,
        scored_from_s=scored_from_s,
        scored_until_s=scored_until_s,
        time_to_target_s=time_to_target_s,
        met_deadline=met_deadline,
        intervals=scored,
        performance_factor=performance_factor,
        shortfall_kwh=shortfall_kwh,
        max_shortfall_kw=max_shortfall_kw,
        passed=passed,
        verdict=verdict or [f"passed: performance factor >= {rule.pass_factor}, target within deadline"],
        sample_spacing_s=spacing_s,
    )


def baseline(
    method: BaselineMethod,
    rule: ReportRule,
    samples: Sequence[Sample],
    notice_s: float,
    deploy_s: float,
    fixed_kw: float | None,
) -> tuple[float | None, str]:
    """The baseline kW by `method` and how it was found (or why there is none)."""
    if method == "meter_before_event":
        if fixed_kw is not None:  # a `reduce` event: the daemon fixed it from the meter at acceptance
            return fixed_kw, "meter reading fixed at acceptance"
        before = [s for s in samples if s.wall_s <= deploy_s]
        if not before:
            return None, "no site power sample before deployment"
        last = before[-1]
        return last.kw, f"meter {deploy_s - last.wall_s:.1f} s before deployment"
    # The whole intervals before the one the notice falls in.
    notice_interval_s = math.floor(notice_s / rule.interval_s) * rule.interval_s
    averages = []
    for n in range(rule.baseline_intervals, 0, -1):
        start_s = notice_interval_s - n * rule.interval_s
        inside = _between(samples, start_s, start_s + rule.interval_s)
        if inside:
            averages.append(sum(inside) / len(inside))
    if not averages:
        return None, f"no site power samples in the {rule.baseline_intervals} intervals before the notice"
    detail = f"average of {len(averages)} of {rule.baseline_intervals} {rule.interval_s / 60:g}-min intervals"
    return sum(averages) / len(averages), detail + " before the notice"


def intervals(
    samples: Sequence[Sample],
    from_s: float,
    until_s: float,
    interval_s: float,
    target_kw: float | None,
    baseline_kw: float | None,
) -> list[Interval]:
    """The settlement intervals (clock-aligned, cut to the window) with their performance factors."""
    if target_kw is None or baseline_kw is None or until_s <= from_s:
        return []
    obligated_kw = baseline_kw - target_kw
    out = []
    start_s = math.floor(from_s / interval_s) * interval_s
    while start_s < until_s:
        part_from, part_until = max(start_s, from_s), min(start_s + interval_s, until_s)
        inside = _between(samples, part_from, part_until)
        if inside:
            average_kw = sum(inside) / len(inside)
            delivered_kw = baseline_kw - average_kw
            if obligated_kw > 0:
                factor = min(1.0, max(0.0, delivered_kw / obligated_kw))
            else:  # already under the target at baseline: the test is staying under it
                factor = 1.0 if average_kw <= target_kw else 0.0
            shortfall_kw = max(0.0, average_kw - target_kw)
            out.append(
                Interval(
                    part_from,
                    part_until,
                    len(inside),
                    average_kw,
                    delivered_kw,
                    factor,
                    shortfall_kw,
                    shortfall_kw * (part_until - part_from) / 3600.0,
                )
            )
        else:
            out.append(Interval(part_from, part_until, 0, None, None, 0.0, None, None))
        start_s += interval_s
    return out


def _between(samples: Sequence[Sample], from_s: float, until_s: float) -> list[float]:
    """kW of the samples with from_s <= wall_s < until_s (samples are in time order)."""
    lo = bisect.bisect_left(samples, from_s, key=lambda s: s.wall_s)
    hi = bisect.bisect_left(samples, until_s, key=lambda s: s.wall_s)
    return [s.kw for s in samples[lo:hi]]


def median_spacing(samples: Sequence[Sample]) -> float | None:
    gaps = sorted(b.wall_s - a.wall_s for a, b in itertools.pairwise(samples))
    return gaps[len(gaps) // 2] if gaps else None
