"""The /metrics listeners (the site daemon's and the fleet dispatcher's): the same connection guard as
the API (daemon/http_guard.py).

prometheus_client's own server started a thread per connection and never timed one out, so idle
sockets cost a thread and an fd each without bound. Here connections are served by the event loop
under a cap and deadlines, and only the rendering runs in one worker thread: rendering a 600-group
scrape is ~23 ms of Python (daemon/cli.py), which must not run on the loop, and one thread keeps
scrapes from piling up renders. The API's own `GET /metrics` (daemon/site/http_api.py) renders in the same
thread through `metrics_response`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mullet.daemon.http_guard import GuardedListener, Limits, ListenerMetrics, warn_if_exposed

METRICS_PATH = "/metrics"

# One per process, for every listener and loop: renders never run two at a time, nor on a loop.
_RENDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")


class ServedMetrics(ListenerMetrics, Protocol):
    registry: CollectorRegistry


async def metrics_response(registry: CollectorRegistry) -> web.Response:
    """`registry` rendered in the metrics thread, as a Prometheus text response."""
    body = await asyncio.get_running_loop().run_in_executor(_RENDER, generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsListener:
    def __init__(self, metrics: ServedMetrics, limits: Limits, listener: str = "metrics") -> None:
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._get)
        self._metrics = metrics
        self._listener = GuardedListener(app, listener, limits, metrics)
        self._name = listener

    async def _get(self, request: web.Request) -> web.Response:
        return await metrics_response(self._metrics.registry)

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port`; returns the bound port (0 picks one)."""
        bound = await self._listener.start(host, port)
        warn_if_exposed(self._name, host, bound)
        return bound

    async def close(self) -> None:
        await self._listener.close()
