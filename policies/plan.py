"""The policy engine: one pure function from (site, readings, obligations, now, memory) to a plan.

Order of rules, each explained in the decision it sets:
1. Budget: the tightest import limit in force, less safety margin, base load and the AI allowance.
2. Economics (opt-in): groups that lose money at the current price are curtailed.
3. Shed to fit: least efficient (J/TH) first, then lowest priority; partial power targets where the
   firmware takes them, so exactly the excess goes; groups inside their minimum on-time go last.
Operator overrides come first: a held group keeps the mode it was given and no rule below moves it.
4. Restore (only with no obligation but a base point active, and every reading known): most efficient
   first, within the deadband, minimum off-times and the restore ramp (kW per rolling minute).
A base point (an ERCOT CLR's SCED dispatch) sets the mining budget below what the site limit leaves:
mining sheds to it (3.) and restores up to it (4.), trimming partial power targets where whole groups
would miss it (plan_trim); economics is suspended while one is in force (SCED dispatched on price
already), and it never caps AI.
5. AI flexible shares: capped only once all mining is shed, only under an obligation that allows
   it, and never below a tenant's firm kW.
6. Arming: under-frequency stages take running groups in merit order until their shed kW is covered.
The absorber (plan_absorber, off by default) runs between 3. and 4.: with an import ramp limit it sheds
mining when AI rises and fills when AI falls, as far as mining can, so the import moves within the ramp;
with a swing reserve it keeps that share of mining in partial targets or asleep. It is soft: it never
forces a group through its min on/off time, never raises mining above the budget or past a restore
blocker, never caps AI, and stands aside under a base point; restores (4.) stay under its cap.

Each phase is a function of its own module (plan_budget, plan_shed, plan_restore, plan_arm; the groups'
working state in plan_groups, shared explanations in plan_reasons); `compute_plan` runs them in order.
A caller that plans the same site over and over passes a `PlanCache` (plan_cache): same plan, less work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from mullet.policies.budget import site_limit, tenant_allowance_kw
from mullet.policies.model import GroupSpec, Obligation, Override, Plan, PolicyMemory, SiteSnapshot, SiteSpec
from mullet.policies.plan_absorber import Absorber, absorb_drop, absorb_rise, reserve_cost
from mullet.policies.plan_arm import arm
from mullet.policies.plan_budget import cap_ai_flex, make_budget
from mullet.policies.plan_cache import PlanCache, rank
from mullet.policies.plan_groups import EPSILON_KW, decisions, enter_groups, load_model, next_groups
from mullet.policies.plan_reasons import actuation_reasons, restore_blocker, summarise, unknown_inputs
from mullet.policies.plan_restore import RestoreRamp, lift_caps, restore_groups
from mullet.policies.plan_shed import economics, hold, shed_to_fit

__all__ = ["PlanCache", "compute_plan", "merit_order", "site_limit", "tenant_allowance_kw"]


def merit_order(groups: tuple[GroupSpec, ...]) -> tuple[GroupSpec, ...]:
    """Shed order: least efficient (highest J/TH) first, then lowest priority, then id for determinism."""
    return rank(groups)[0]


def compute_plan(
    site: SiteSpec,
    snapshot: SiteSnapshot,
    obligations: Sequence[Obligation],
    now: float,
    memory: PolicyMemory | None = None,
    overrides: Mapping[str, Override] | None = None,
    *,
    cache: PlanCache | None = None,
) -> Plan:
    """The plan for this instant. `cache`: the caller's `PlanCache` for this site, kept from one call to
    the next; without one the plan is the same, made from scratch."""
    memory = memory if memory is not None else PolicyMemory()
    cache = cache if cache is not None else PlanCache()
    settings = site.settings

    # 1. Budget.
    budget = make_budget(site, snapshot, obligations, now, memory.caps)
    active = budget.active
    obligation_active = bool(active)
    reasons = [f"limit {budget.limit_kw:.0f} kW from {budget.site_binding}"]
    reasons.extend(actuation_reasons(active, now))
    point = budget.base_point
    if point is not None:
        reasons.append(
            f"mining follows base point '{point.event_id}' ({point.program}) at {point.kw:.0f} kW"
            f" (site limit leaves {budget.mining_max_kw:.0f} kW)"
        )

    ranking = cache.ranking(site.groups)
    groups, unknown_groups = enter_groups(ranking[0], memory.groups, snapshot)
    load_kw = load_model(obligation_active)

    # Operator overrides, ahead of every rule.
    held = hold(groups, overrides or {}, now)
    if held:
        reasons.append(f"operator overrides: {summarise(held)}")

    unknown = unknown_inputs(site, snapshot, unknown_groups, ranking)
    if unknown:
        reasons.append(f"no load increase: {summarise(unknown)} unknown")

    # 2. Economics, suspended under a base point: curtailing below it would be charged as deviation.
    if point is not None:
        views = {}
        if settings.economics_enabled:
            reasons.append(
                f"economics suspended: base point '{point.event_id}' in force (SCED dispatched on price;"
                " curtailing below it is charged as deviation)"
            )
    else:
        views = economics(groups, settings, snapshot.price_usd_per_mwh, now)

    # 3. Shed to fit.
    # Under a base point, exactness is worth a partial trim (deviation is charged); else merit order.
    exact = point is not None and budget.mining_kw < budget.mining_max_kw
    planned_kw = shed_to_fit(
        groups,
        budget.mining_kw,
        budget.binding,
        obligation_active,
        load_kw,
        now,
        exact_kw=settings.deadband_kw if exact else None,
    )

    # The absorber, soft, after every hard limit: shed towards its cap (AI up, or the reserve).
    absorber = Absorber.at(site, snapshot, memory.imports, groups, load_kw, now)
    absorbing = absorber.on and point is None
    if absorbing:
        planned_kw, note = absorb_rise(groups, absorber, planned_kw, load_kw, now)
        reasons.extend([note] if note else [])
    elif absorber.on:
        reasons.append(f"absorber aside: mining follows base point '{point.event_id if point else ''}'")

    # 4. Restore: AI caps first, then groups, within one ramp; the absorber fills an AI drop between.
    ramp = RestoreRamp.at(settings, memory.restores, now)
    blocker = restore_blocker(active, unknown)
    lift_caps(site, budget, ramp, blocker, planned_kw, now)
    restore_kw = budget.mining_kw
    if absorbing:
        planned_kw, note = absorb_drop(
            groups, absorber, settings, budget.mining_kw, planned_kw, views, blocker, load_kw, now
        )
        reasons.extend([note] if note else [])
        # No restore stacked on a fill: past where the import was, the AI's return would land on it.
        restore_kw = min(restore_kw, absorber.restore_cap_kw(), absorber.previous_kw if note else math.inf)
    planned_kw = restore_groups(
        groups, settings, restore_kw, planned_kw, ramp, views, blocker, load_kw, now, exact=exact
    )
    reserve_kw, reserve_th_s = (0.0, 0.0)
    if absorbing and absorber.reserve_kw > 0:
        reserve_kw, reserve_th_s = reserve_cost(groups, absorber, budget.mining_kw, planned_kw, load_kw)
        reasons.append(
            f"swing reserve: {reserve_kw:.0f} of {absorber.reserve_kw:.0f} kW held below the budget"
            f" ({reserve_th_s:.0f} TH/s given up)"
        )

    # 5. AI flexible shares.
    tenant_decisions = cap_ai_flex(site, budget, groups, planned_kw)
    budget_kw = budget.mining_kw
    budget_text = (
        f"limit - margin {site.safety_margin_kw:.0f} - base {site.base_load_kw:.0f}"
        f" - AI allowance {budget.ai_allowance_kw:.0f}"
    )
    if budget_kw < budget.mining_max_kw:
        budget_text = f"base point (below {budget.mining_max_kw:.0f} kW = {budget_text})"
    reasons.append(f"mining budget {budget_kw:.0f} kW = {budget_text}")
    # Feasible: within the site's limits. A base point that mining cannot reach is a deviation, said so.
    feasible = planned_kw <= budget.mining_max_kw + EPSILON_KW
    if feasible and planned_kw > budget_kw + EPSILON_KW:
        reasons.append(
            f"base point not met: mining planned {planned_kw:.0f} kW,"
            f" {planned_kw - budget_kw:.0f} kW above it (asleep groups' draw, operator holds)"
        )
    if not feasible:
        reasons.append(
            f"infeasible: all mining curtailed and still {planned_kw - budget.mining_max_kw:.0f} kW over;"
            " firm AI load is never curtailed"
        )

    fits = cache.fits_reasons()
    for group in groups:
        if not group.reason:
            group.reason = fits[group.rank - 1]

    # 6. Arming.
    reasons.extend(arm(settings.trip_stages, groups, load_kw, cache))

    return Plan(
        computed_at_s=now,
        site_limit_kw=budget.limit_kw,
        binding_constraint=budget.binding,
        ai_allowance_kw=budget.ai_allowance_kw,
        mining_budget_kw=budget_kw,
        mining_planned_kw=planned_kw,
        feasible=feasible,
        active_obligations=tuple(o.event_id for o in active),
        decisions=decisions(groups, ranking[1], cache),
        reasons=tuple(reasons),
        tenants=tenant_decisions,
        memory=PolicyMemory(
            groups=next_groups(memory.groups, groups, now),
            restores=ramp.ledger(),
            caps=budget.caps,
            imports=absorber.next_ledger(planned_kw, now),
        ),
        mining_max_kw=budget.mining_max_kw,
        swing_reserve_kw=reserve_kw,
        swing_reserve_th_s=reserve_th_s,
    )
