"""PDU driver state as Prometheus metrics, read from the pool at scrape time (nothing on the hot path).

Labels: `pdu` ids from the config (bounded by the site) and the driver's fixed FAILURE_REASONS.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mullet.drivers.pdu.pool import PduPool
from mullet.drivers.pdu.types import FAILURE_REASONS


class PduCollector(Collector):
    def __init__(self, pool: PduPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "mullet_pdu_up",
            "1 while the PDU's connection is up and its last request was answered.",
            labels=["pdu"],
        )
        age = GaugeMetricFamily(
            "mullet_pdu_readback_age_seconds",
            "Age of the PDU's last complete outlet power readback; NaN before the first.",
            labels=["pdu"],
        )
        failures = CounterMetricFamily(
            "mullet_pdu_request_failures",
            "PDU requests (or outlets of a switch) that failed, by reason.",
            labels=["pdu", "reason"],
        )
        reads = CounterMetricFamily(
            "mullet_pdu_power_reads", "Complete outlet power readbacks.", labels=["pdu"]
        )
        logins = CounterMetricFamily("mullet_pdu_logins", "Login writes acknowledged.", labels=["pdu"])
        now_s = time.monotonic()
        for pdu_id, client in self.pool.clients.items():
            up.add_metric([pdu_id], 1.0 if client.state == "up" else 0.0)
            read_s = client.last_read_s
            age.add_metric([pdu_id], math.nan if read_s is None else now_s - read_s)
            for reason in FAILURE_REASONS:
                failures.add_metric([pdu_id, reason], float(client.failures.get(reason, 0)))
            reads.add_metric([pdu_id], float(client.power_reads))
            logins.add_metric([pdu_id], float(client.logins))
        yield from (up, age, failures, reads, logins)
