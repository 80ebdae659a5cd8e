"""An edge agent's /metrics, served when its file has a `[metrics]` table (docs/agents.md): the
standard process collectors and `mullet_build_info` (daemon/process_metrics.py), on the same guarded
listener as the site daemon's and the fleet dispatcher's (daemon/metrics_http.py).

Off unless configured: several ASIC agents may share a host (one per group), and a default port on by
default would stop the second one from starting after an upgrade.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from prometheus_client import CollectorRegistry

from mullet.daemon.config import MetricsSection
from mullet.daemon.http_guard import Limits
from mullet.daemon.metrics import ListenerSeries
from mullet.daemon.metrics_http import MetricsListener
from mullet.daemon.process_metrics import register_process_metrics

log = structlog.get_logger("mullet.agent")


class AgentMetrics(ListenerSeries):
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        register_process_metrics(r)
        self._add_listener_series(r)


@contextlib.asynccontextmanager
async def serving_metrics(section: MetricsSection | None) -> AsyncIterator[AgentMetrics | None]:
    """The agent's /metrics while the block runs; nothing without a `[metrics]` section."""
    if section is None:
        yield None
        return
    metrics = AgentMetrics()
    limits = Limits(
        section.max_connections, section.header_timeout_s, section.body_timeout_s, section.idle_timeout_s
    )
    listener = MetricsListener(metrics, limits)
    port = await listener.start(section.host, section.port)
    log.info("agent metrics listening", metrics=f"http://{section.host}:{port}/metrics")
    try:
        yield metrics
    finally:
        await listener.close()
