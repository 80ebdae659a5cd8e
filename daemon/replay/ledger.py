"""What a replayed site drew, earned and paid, integrated exactly between the engine's steps.

Power between two steps is linear (mining ramps are linear; everything else holds), so each step adds
the trapezoid of its endpoints. The engine stops at every settlement-interval boundary, so a step never
straddles one and the 15-minute table (plots, 4CP, ERS-style scoring) needs no splitting. Revenue
counts hashing power only: a group asleep at its sleep draw earns nothing (sleep kW is fans and
control boards), so hashing kW = (power - sleep) scaled to rated.
"""

from __future__ import annotations

from dataclasses import dataclass

from mullet.daemon.replay.physics import Step

KWS_PER_MWH = 3.6e6  # kW x s in a MWh
S_PER_DAY = 86_400.0


@dataclass
class IntervalRow:
    """One settlement interval (15 min): energy in kWh, money in USD."""

    start_s: float
    price_usd_per_mwh: float | None = None
    site_kwh: float = 0.0
    ai_kwh: float = 0.0
    mining_kwh: float = 0.0
    curtailed_kwh: float = 0.0
    energy_cost_usd: float = 0.0
    mining_cost_usd: float = 0.0
    mining_revenue_usd: float = 0.0
    avoided_cost_usd: float = 0.0


@dataclass
class Totals:
    ai_mwh: float = 0.0
    mining_mwh: float = 0.0
    site_mwh: float = 0.0
    curtailed_mwh: float = 0.0
    energy_cost_usd: float = 0.0
    mining_cost_usd: float = 0.0
    mining_revenue_usd: float = 0.0
    avoided_cost_usd: float = 0.0
    unpriced_s: float = 0.0  # time without a known price: its energy is not costed (never counted as $0)


class Ledger:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.rows: list[IntervalRow] = []
        self.totals = Totals()

    def row(self, t_s: float, price: float | None) -> IntervalRow:
        """The interval `t_s` falls in (opened on first use; the engine moves forward only)."""
        start_s = (t_s // self.interval_s) * self.interval_s
        if not self.rows or self.rows[-1].start_s != start_s:
            self.rows.append(IntervalRow(start_s))
        row = self.rows[-1]
        if row.price_usd_per_mwh is None:
            row.price_usd_per_mwh = price
        return row

    def add(self, t0_s: float, dt_s: float, price: float | None, hashprice: float | None, step: Step) -> None:
        """One step of `dt_s` from `t0_s` (`step`: its mean powers, hashing in TH/s)."""
        if dt_s <= 0:
            return
        row = self.row(t0_s, price)
        site_kwh, ai_kwh = step.site_kw * dt_s / 3600.0, step.ai_kw * dt_s / 3600.0
        mining_kwh, curtailed_kwh = step.mining_kw * dt_s / 3600.0, step.curtailed_kw * dt_s / 3600.0
        row.site_kwh += site_kwh
        row.ai_kwh += ai_kwh
        row.mining_kwh += mining_kwh
        row.curtailed_kwh += curtailed_kwh
        totals = self.totals
        if price is None:
            totals.unpriced_s += dt_s
        else:
            row.energy_cost_usd += site_kwh * price / 1000.0
            row.mining_cost_usd += mining_kwh * price / 1000.0
            row.avoided_cost_usd += curtailed_kwh * price / 1000.0
        if hashprice is not None:
            row.mining_revenue_usd += step.hashing_ths * hashprice * dt_s / S_PER_DAY

    def close(self) -> Totals:
        totals = Totals(unpriced_s=self.totals.unpriced_s)
        for row in self.rows:
            totals.site_mwh += row.site_kwh / 1000.0
            totals.ai_mwh += row.ai_kwh / 1000.0
            totals.mining_mwh += row.mining_kwh / 1000.0
            totals.curtailed_mwh += row.curtailed_kwh / 1000.0
            totals.energy_cost_usd += row.energy_cost_usd
            totals.mining_cost_usd += row.mining_cost_usd
            totals.mining_revenue_usd += row.mining_revenue_usd
            totals.avoided_cost_usd += row.avoided_cost_usd
        self.totals = totals
        return totals
