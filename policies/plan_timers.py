"""When the plan could change with nothing new coming in: the next instant a time rule ends.

`compute_plan` reads the clock through a handful of rules only: a group's minimum on and off times
(from `GroupMemory.since_s`), the restore stagger and the restore ramp's one-minute window (the
ledger's entries), the absorber's import windows (its import ledger's entries), obligations starting
and ending, and operator overrides expiring. Between two of those instants the same inputs give the
same plan, so a simulation (`mulletd replay`) may skip the cycles in between; the daemon still plans
every period.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mullet.policies.model import NEVER, Obligation, Override, PolicyMemory, SiteSpec
from mullet.policies.plan_absorber import IMPORT_WINDOWS_S, leave_times
from mullet.policies.plan_restore import RAMP_WINDOW_S


def next_change_s(
    site: SiteSpec,
    memory: PolicyMemory,
    obligations: Iterable[Obligation],
    overrides: Mapping[str, Override],
    now: float,
) -> float | None:
    """The earliest instant after `now` at which a time rule ends; None when none is pending."""
    moments: list[float] = []
    for spec in site.groups:
        remembered = memory.groups.get(spec.group_id)
        if remembered is None or remembered.since_s == NEVER:
            continue
        hold_s = spec.min_off_s if remembered.mode == "curtail" else spec.min_on_s
        moments.append(remembered.since_s + hold_s)
    stagger_s = site.settings.restore_stagger_s
    for t, _kw in memory.restores:
        moments += (t + stagger_s, t + RAMP_WINDOW_S)
    for t in leave_times(memory.imports):  # an import stops being in force: it leaves each window
        moments += (t + window_s for window_s in IMPORT_WINDOWS_S)
    for obligation in obligations:
        moments.append(obligation.start_s)
        if obligation.end_s is not None and not obligation.explicit_recall:
            moments.append(obligation.end_s)
    moments += (o.until_s for o in overrides.values())
    later = [m for m in moments if m > now]
    return min(later) if later else None
