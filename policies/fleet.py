"""Fleet dispatch: what a site offers by deadline class, and how a portfolio obligation is split.

A grid program dispatches several sites as one resource (an aggregated load resource). Each site
publishes what it could shed now, by deadline class (docs/protocol.md, `daemon/plan` `flex`): within a
deadline shorter than firmware sleep only the groups armed on the fast path count; from the firmware
sleep time on, every running group's draw above its sleep draw. The fleet dispatcher splits the
obligation in proportion to what each site can deliver within the program's deadline, so every site
sheds the same fraction of its flexibility and none is asked for more than it has.

Pure: no I/O, no clock; unknown readings count as nothing deliverable (unknown is never capacity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mullet.policies.model import GroupDecision, SiteSnapshot, SiteSpec


@dataclass(frozen=True, slots=True)
class Flex:
    """What one site could shed now, by deadline class (published in its plan summary)."""

    site_kw: float | None  # the site meter's import now; None = unknown
    fast_path_kw: float  # shed on instruction by the armed trip stages (deadline < firmware sleep)
    graceful_kw: float  # shed by firmware sleep and power targets (deadline >= firmware sleep)
    firmware_sleep_s: float


def site_flex(
    site: SiteSpec, snapshot: SiteSnapshot, decisions: Sequence[GroupDecision], firmware_sleep_s: float
) -> Flex:
    """A site's flexibility from its measured state and the plan in force. A group counts with its
    measured draw above its sleep draw; a group with unknown telemetry counts nothing (a reduction
    cannot be promised on a reading we lack). The fast path counts only groups armed at a stage."""
    armed = {d.group_id for d in decisions if d.trip_stage is not None}
    fast_kw = graceful_kw = 0.0
    for group in site.groups:
        power_kw = snapshot.group_power_kw.get(group.group_id)
        if power_kw is None or not math.isfinite(power_kw):
            continue
        shed_kw = max(0.0, power_kw - group.sleep_kw)
        graceful_kw += shed_kw
        if group.group_id in armed:
            fast_kw += shed_kw
    return Flex(snapshot.site_power_kw, fast_kw, graceful_kw, firmware_sleep_s)


@dataclass(frozen=True, slots=True)
class SiteOffer:
    """One site as the dispatcher sees it when it splits."""

    site_id: str
    online: bool
    fast_path_kw: float | None  # None: unknown (no plan, or a plan without `flex`)
    graceful_kw: float | None
    firmware_sleep_s: float
    # A ceiling learned during the obligation (what a site that fell short actually delivers); None: none.
    ceiling_kw: float | None = None


def deliverable_kw(offer: SiteOffer, deadline_s: float) -> float:
    """What `offer`'s site can deliver within `deadline_s`: nothing when offline or unknown."""
    if not offer.online:
        return 0.0
    kw = offer.graceful_kw if deadline_s >= offer.firmware_sleep_s else offer.fast_path_kw
    if kw is None or not math.isfinite(kw) or kw <= 0.0:
        return 0.0
    if offer.ceiling_kw is not None:
        kw = min(kw, max(0.0, offer.ceiling_kw))
    return kw


@dataclass(frozen=True, slots=True)
class Split:
    obligation_kw: float
    deadline_s: float
    shares_kw: Mapping[str, float]  # every offered site, 0.0 for those that get nothing
    capacity_kw: Mapping[str, float]
    feasible: bool  # the sites can cover the whole obligation within the deadline
    shortfall_kw: float  # obligation not covered (0 when feasible)
    reasons: tuple[str, ...]


def split_obligation(obligation_kw: float, deadline_s: float, offers: Iterable[SiteOffer]) -> Split:
    """Split `obligation_kw` across the offers in proportion to what each can deliver by `deadline_s`.

    Feasible: shares sum to the obligation and each is at most the site's capacity. Infeasible: every
    site is asked for all it has and the rest is the shortfall (the caller decides whether to take it).
    """
    if not math.isfinite(obligation_kw) or obligation_kw < 0.0:
        raise ValueError(f"obligation_kw must be finite and >= 0, got {obligation_kw!r}")
    if not math.isfinite(deadline_s) or deadline_s < 0.0:
        raise ValueError(f"deadline_s must be finite and >= 0, got {deadline_s!r}")
    capacity: dict[str, float] = {}
    reasons: list[str] = []
    for offer in offers:
        if offer.site_id in capacity:
            raise ValueError(f"site {offer.site_id!r} offered twice")
        capacity[offer.site_id] = kw = deliverable_kw(offer, deadline_s)
        if not offer.online:
            reasons.append(f"{offer.site_id}: offline, nothing")
        elif kw == 0.0:
            reasons.append(f"{offer.site_id}: nothing deliverable within {deadline_s:g} s")
    total_kw = math.fsum(capacity.values())
    if obligation_kw == 0.0:
        return Split(0.0, deadline_s, dict.fromkeys(capacity, 0.0), capacity, True, 0.0, tuple(reasons))
    if total_kw < obligation_kw:
        shortfall_kw = obligation_kw - total_kw
        reasons.append(
            f"short by {shortfall_kw:.0f} kW: {total_kw:.0f} kW deliverable within {deadline_s:g} s,"
            f" {obligation_kw:.0f} kW asked"
        )
        return Split(obligation_kw, deadline_s, dict(capacity), capacity, False, shortfall_kw, tuple(reasons))
    fraction = obligation_kw / total_kw
    shares = {site_id: min(kw, kw * fraction) for site_id, kw in capacity.items()}
    _absorb_rounding(shares, capacity, obligation_kw)
    reasons.append(
        f"{obligation_kw:.0f} kW over {sum(1 for kw in capacity.values() if kw > 0)} sites:"
        f" {fraction:.1%} of each site's {total_kw:.0f} kW deliverable within {deadline_s:g} s"
    )
    return Split(obligation_kw, deadline_s, shares, capacity, True, 0.0, tuple(reasons))


def _absorb_rounding(shares: dict[str, float], capacity: Mapping[str, float], obligation_kw: float) -> None:
    """Put the float residue of the proportional split on sites with room, so the shares sum exactly."""
    for site_id in sorted(shares, key=lambda s: capacity[s] - shares[s], reverse=True):
        residue_kw = obligation_kw - math.fsum(shares.values())
        if residue_kw == 0.0:
            return
        shares[site_id] = min(capacity[site_id], max(0.0, shares[site_id] + residue_kw))
