"""Whether mining a group pays at the current energy price (the "back" of the mullet)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mullet.policies.model import GroupSpec, PolicySettings

# Energy one TH/s of hashrate uses in a day, per J/TH of efficiency: 86,400 s / 3.6e9 J per MWh.
MWH_PER_THS_DAY_PER_J_PER_TH = 86_400 / 3.6e9


def break_even_usd_per_mwh(group: GroupSpec, hashprice_usd_per_th_day: float | None) -> float | None:
    """The energy price above which the group's hashing earns less than its power costs.

    Hashprice is revenue per TH/s per day; at e J/TH a TH/s burns e x 2.4e-5 MWh a day, so
    break-even = hashprice / (e x 2.4e-5): $0.05/TH/day gives ~$119/MWh for an S21 at 17.5 J/TH.
    """
    if group.break_even_usd_per_mwh is not None:
        return group.break_even_usd_per_mwh
    if hashprice_usd_per_th_day is None:
        return None
    return hashprice_usd_per_th_day / (group.efficiency_j_per_th * MWH_PER_THS_DAY_PER_J_PER_TH)


@dataclass(frozen=True, slots=True)
class EconomicView:
    # curtail: losing money; run: earning; hold: inside the deadband or price unknown, keep as is.
    wish: Literal["curtail", "run", "hold"]
    reason: str


def economic_view(
    group: GroupSpec, settings: PolicySettings, price_usd_per_mwh: float | None
) -> EconomicView | None:
    """None when economics has no opinion (off, or no break-even known for this group)."""
    if not settings.economics_enabled:
        return None
    break_even = break_even_usd_per_mwh(group, settings.hashprice_usd_per_th_day)
    if break_even is None:
        return None
    if price_usd_per_mwh is None:
        return EconomicView("hold", "economics: price unknown, no switch for price")
    if price_usd_per_mwh > break_even:
        return EconomicView(
            "curtail", f"economics: ${price_usd_per_mwh:.2f}/MWh > break-even ${break_even:.2f}/MWh"
        )
    if price_usd_per_mwh < break_even - settings.price_deadband_usd_per_mwh:
        return EconomicView(
            "run", f"economics: ${price_usd_per_mwh:.2f}/MWh pays (break-even ${break_even:.2f})"
        )
    return EconomicView(
        "hold", f"economics: ${price_usd_per_mwh:.2f}/MWh within the deadband below ${break_even:.2f}/MWh"
    )


def mining_margin_usd_per_kwh(
    groups: Sequence[GroupSpec], hashprice_usd_per_th_day: float | None, price_usd_per_mwh: float
) -> float | None:
    """What a kWh of the site's mining earns over its energy at `price_usd_per_mwh` (negative when
    mining loses), rating-weighted over the groups whose break-even is known: at break-even B a kWh
    earns B/1000 in hashing, so the margin is (B - price)/1000. None when no group's is known."""
    weighted = 0.0
    rated_kw = 0.0
    for group in groups:
        break_even = break_even_usd_per_mwh(group, hashprice_usd_per_th_day)
        if break_even is None or group.rated_kw <= 0:
            continue
        weighted += group.rated_kw * (break_even - price_usd_per_mwh) / 1000.0
        rated_kw += group.rated_kw
    return weighted / rated_kw if rated_kw > 0 else None
