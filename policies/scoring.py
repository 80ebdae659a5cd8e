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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mullet.policies.baselines import Baseline, Sample, meter_before

BaselineMethod = Literal[
    "middle_8_of_10", "regression", "meter_before", "pre_notice_intervals", "meter_before_event"
]
BASELINE_METHODS: tuple[BaselineMethod, ...] = (
    "middle_8_of_10",
    "regression",
    "meter_before",
    "pre_notice_intervals",
    "meter_before_event",
)
# Methods that need the journal's history (preceding days), computed by the caller and passed to `score`.
HISTORY_METHODS: tuple[BaselineMethod, ...] = ("middle_8_of_10", "regression")

__all__ = ["BASELINE_METHODS", "HISTORY_METHODS", "Baseline", "BaselineMethod", "Sample"]


@dataclass(frozen=True, slots=True)
class ReportRule:
    """How a program is scored: its baseline, its settlement interval and its pass mark."""

    baseline: BaselineMethod
    interval_s: float = 900.0
    baseline_intervals: int = 4  # pre_notice_intervals: how many whole intervals before the notice
    pass_factor: float = 0.95
    source: str = ""


# ERS is scored on 15-minute interval data against ERCOT's default baseline, Middle 8-of-10 like days,
# with event performance factor >= 0.95 (ERCOT Nodal Protocols 8.1.3.1.4; Demand Response Baseline
# Methodologies; docs/reports.md). The other programs are judged against the meter just before
# deployment, which is what the daemon itself fixes as a `reduce` baseline.
_ERS = ReportRule(
    "middle_8_of_10",
    source="ERCOT ERS: 15-min intervals after the ramp, Middle 8-of-10 like-day baseline with event-day "
    "adjustment, event performance factor >= 0.95",
)
_DEFAULT = ReportRule(
    "meter_before_event",
    source="meter before deployment; 15-min intervals; performance factor >= 0.95",
)
RULES: dict[str, ReportRule] = {"ers-10": _ERS, "ers-30": _ERS}


def rule_for(program: str) -> ReportRule:
    return RULES.get(program.casefold(), _DEFAULT)


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
    baseline_kw: float | None = None  # this interval's (matching-day baselines differ per interval)
    target_kw: float | None = None


@dataclass(frozen=True, slots=True)
class Score:
    baseline_kw: float | None  # time-weighted mean over the scored intervals (or the flat baseline)
    baseline_detail: str
    target_kw: float | None  # likewise
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
    scored: bool = True  # False: nothing to score (the event ended inside its ramp), neither pass nor fail


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
    history_baseline: Baseline | None = None,
) -> Score:
    """Score an obligation (`limit`: import <= kw; otherwise a `reduce`: kw below the baseline) from
    the site power `samples` (in time order) between its deployment and `end_s`. `fixed_baseline_kw`:
    the baseline fixed at acceptance, if any (what `meter_before_event` uses first). A method of
    HISTORY_METHODS takes its per-interval baseline from `history_baseline` (policies/baselines.py)."""
    verdict: list[str] = []
    # The ramp (deployment + the program's deadline) is not scored: the sustained response period
    # after it is, in clock-aligned intervals, a partial first or last one on its part inside it.
    scored_from_s = deploy_s + (deadline_s or 0.0)
    scored_until_s = end_s
    window = _slots(scored_from_s, scored_until_s, rule.interval_s)
    # An event ending in its ramp has no scored interval; a meter-based baseline is still shown.
    base_window = window or _slots(deploy_s, deploy_s + 1.0, rule.interval_s)
    base = baseline(
        method, rule, samples, notice_s, deploy_s, fixed_baseline_kw, history_baseline, base_window
    )
    flat_kw = _flat(base)

    def target_at(baseline_kw: float | None) -> float | None:
        if kind == "limit":
            return kw
        return None if baseline_kw is None else baseline_kw - kw

    spacing_s = median_spacing(samples)
    if scored_until_s <= scored_from_s:
        say_none = base.kw is None and method not in HISTORY_METHODS  # a history one needs the intervals
        return _ramp_only(
            kind,
            kw,
            flat_kw,
            base.detail,
            deploy_s,
            deadline_s,
            scored_from_s,
            end_s,
            in_progress,
            samples,
            [f"no baseline: {base.detail}"] if say_none else [],
        )

    scored = intervals(samples, scored_from_s, scored_until_s, rule.interval_s, target_at, base.kw)
    weights = [i.end_s - i.start_s for i in scored]
    baseline_kw = _weighted([i.baseline_kw for i in scored], weights)
    target_kw = _weighted([i.target_kw for i in scored], weights)
    obligated_kw = None if baseline_kw is None or target_kw is None else baseline_kw - target_kw
    if kind != "limit":
        obligated_kw = kw if baseline_kw is not None else None

    # The ramp's target: the first scored interval's (a flat baseline's everywhere).
    ramp_target_kw = next((i.target_kw for i in scored if i.target_kw is not None), None)
    time_to_target_s = _time_to_target(samples, deploy_s, end_s, ramp_target_kw)
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

    performance_factor = shortfall_kwh = max_shortfall_kw = None
    if base.kw is None:
        verdict.append(f"no baseline: {base.detail}")
    else:
        performance_factor = sum(
            i.performance_factor * w for i, w in zip(scored, weights, strict=True)
        ) / sum(weights)
        unknown = [i for i in scored if i.baseline_kw is None]
        gaps = [i for i in scored if i.average_kw is None and i.baseline_kw is not None]
        if unknown:
            verdict.append(f"{len(unknown)} interval(s) without a baseline count as not delivered")
        if gaps:
            verdict.append(f"{len(gaps)} interval(s) without site power samples count as not delivered")
        if not gaps and not unknown:
            shortfall_kwh = sum(i.shortfall_kwh or 0.0 for i in scored)
            max_shortfall_kw = max(i.shortfall_kw or 0.0 for i in scored)
        if performance_factor < rule.pass_factor:
            verdict.append(f"performance factor {performance_factor:.3f} < {rule.pass_factor}")
    passed = not verdict and performance_factor is not None
    if in_progress:
        verdict.append("event still in force: scored up to the journal's newest entry")
    return Score(
        baseline_kw=baseline_kw,
        baseline_detail=base.detail,
        target_kw=target_kw,
        obligated_kw=obligated_kw,
        scored_from_s=scored_from_s,
        scored_until_s=scored_until_s,
        time_to_target_s=time_to_target_s,
        met_deadline=met_deadline,
        intervals=scored if base.kw is not None else [],
        performance_factor=performance_factor,
        shortfall_kwh=shortfall_kwh,
        max_shortfall_kw=max_shortfall_kw,
        passed=passed,
        verdict=verdict or [f"passed: performance factor >= {rule.pass_factor}, target within deadline"],
        sample_spacing_s=spacing_s,
    )


def _ramp_only(
    kind: str,
    kw: float,
    flat_kw: float | None,
    detail: str,
    deploy_s: float,
    deadline_s: float | None,
    scored_from_s: float,
    end_s: float,
    in_progress: bool,
    samples: Sequence[Sample],
    notes: list[str],
) -> Score:
    """An event that ended inside its ramp: nothing of it is scored, so no factor and no fail."""
    target_kw = kw if kind == "limit" else (None if flat_kw is None else flat_kw - kw)
    time_to_target_s = _time_to_target(samples, deploy_s, end_s, target_kw)
    reached = time_to_target_s is not None and (deadline_s is None or time_to_target_s <= deadline_s)
    if in_progress:
        why = f"not scored yet: {end_s - deploy_s:.0f} s into its {deadline_s or 0:g} s ramp period"
    else:
        why = (
            f"not scored: the event ended {end_s - deploy_s:.0f} s after deployment, inside its "
            f"{deadline_s or 0:g} s ramp period, which is never scored"
        )
    return Score(
        baseline_kw=flat_kw,
        baseline_detail=detail,
        target_kw=target_kw,
        obligated_kw=None if flat_kw is None or target_kw is None else flat_kw - target_kw,
        scored_from_s=scored_from_s,
        scored_until_s=end_s,
        time_to_target_s=time_to_target_s,
        met_deadline=True if reached else None,
        intervals=[],
        performance_factor=None,
        shortfall_kwh=None,
        max_shortfall_kw=None,
        passed=False,
        verdict=[why, *notes],
        sample_spacing_s=median_spacing(samples),
        scored=False,
    )


def _time_to_target(
    samples: Sequence[Sample], deploy_s: float, end_s: float, target_kw: float | None
) -> float | None:
    if target_kw is None:
        return None
    for sample in samples:
        if deploy_s <= sample.wall_s <= end_s and sample.kw <= target_kw:
            return sample.wall_s - deploy_s
    return None


def _weighted(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    total_s = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total_s if pairs and total_s > 0 else None


def _slots(from_s: float, until_s: float, interval_s: float) -> list[float]:
    start_s = math.floor(from_s / interval_s) * interval_s
    out = []
    while start_s < until_s:
        out.append(start_s)
        start_s += interval_s
    return out


def _flat(base: Baseline) -> float | None:
    """The baseline when it is the same in every interval (meter-based methods), else None."""
    if base.kw is None:
        return None
    values = set(base.kw.values()) if base.kw else set()
    return values.pop() if len(values) == 1 else None


def baseline(
    method: BaselineMethod,
    rule: ReportRule,
    samples: Sequence[Sample],
    notice_s: float,
    deploy_s: float,
    fixed_kw: float | None,
    history_baseline: Baseline | None = None,
    window: Sequence[float] = (),
) -> Baseline:
    """The baseline by `method` for each interval of `window` (starts) and how it was found (or why
    there is none)."""
    if method in HISTORY_METHODS:
        if history_baseline is None:
            return Baseline(None, f"{method} needs the journal's preceding days, not given")
        return history_baseline
    if method == "meter_before":
        return meter_before(samples, notice_s=notice_s, window=window, interval_s=rule.interval_s)
    if method == "meter_before_event":
        if fixed_kw is not None:  # a `reduce` event: the daemon fixed it from the meter at acceptance
            return Baseline(dict.fromkeys(window, fixed_kw), "meter reading fixed at acceptance")
        before = [s for s in samples if s.wall_s <= deploy_s]
        if not before:
            return Baseline(None, "no site power sample before deployment")
        last = before[-1]
        return Baseline(
            dict.fromkeys(window, last.kw), f"meter {deploy_s - last.wall_s:.1f} s before deployment"
        )
    # pre_notice_intervals: the whole intervals before the one the notice falls in.
    notice_interval_s = math.floor(notice_s / rule.interval_s) * rule.interval_s
    averages = []
    for n in range(rule.baseline_intervals, 0, -1):
        start_s = notice_interval_s - n * rule.interval_s
        inside = _between(samples, start_s, start_s + rule.interval_s)
        if inside:
            averages.append(sum(inside) / len(inside))
    if not averages:
        return Baseline(
            None, f"no site power samples in the {rule.baseline_intervals} intervals before the notice"
        )
    detail = f"average of {len(averages)} of {rule.baseline_intervals} {rule.interval_s / 60:g}-min intervals"
    return Baseline(dict.fromkeys(window, sum(averages) / len(averages)), detail + " before the notice")


def intervals(
    samples: Sequence[Sample],
    from_s: float,
    until_s: float,
    interval_s: float,
    target_at: Callable[[float | None], float | None],
    baseline_kw: Mapping[float, float] | None,
) -> list[Interval]:
    """The settlement intervals (clock-aligned, cut to the window) with their performance factors;
    `baseline_kw` by interval start, `target_at` an interval's target from its baseline."""
    if baseline_kw is None or until_s <= from_s:
        return []
    out = []
    for start_s in _slots(from_s, until_s, interval_s):
        part_from, part_until = max(start_s, from_s), min(start_s + interval_s, until_s)
        inside = _between(samples, part_from, part_until)
        base_kw = baseline_kw.get(start_s)
        target_kw = target_at(base_kw)
        if inside and base_kw is not None and target_kw is not None:
            average_kw = sum(inside) / len(inside)
            delivered_kw = base_kw - average_kw
            obligated_kw = base_kw - target_kw
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
                    base_kw,
                    target_kw,
                )
            )
        else:
            average = sum(inside) / len(inside) if inside else None
            out.append(
                Interval(
                    part_from, part_until, len(inside), average, None, 0.0, None, None, base_kw, target_kw
                )
            )
    return out


def _between(samples: Sequence[Sample], from_s: float, until_s: float) -> list[float]:
    """kW of the samples with from_s <= wall_s < until_s (samples are in time order)."""
    lo = bisect.bisect_left(samples, from_s, key=lambda s: s.wall_s)
    hi = bisect.bisect_left(samples, until_s, key=lambda s: s.wall_s)
    return [s.kw for s in samples[lo:hi]]


def median_spacing(samples: Sequence[Sample]) -> float | None:
    gaps = sorted(b.wall_s - a.wall_s for a, b in itertools.pairwise(samples))
    return gaps[len(gaps) // 2] if gaps else None
