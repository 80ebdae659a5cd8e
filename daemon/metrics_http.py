"""The daemon's /metrics listener: the same connection guard as the API (daemon/http_guard.py).

prometheus_client's own server started a thread per connection and never timed one out, so idle
sockets cost a thread and an fd each without bound. Here connections are served by the event loop
under a cap and deadlines, and only the rendering runs in one worker thread: rendering a 600-group
scrape is ~23 ms of Python (daemon/cli.py), which must not run on the loop, and one thread keeps
scrapes from piling up renders.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mullet.daemon.http_guard import GuardedListener, Limits, warn_if_exposed
from mullet.daemon.metrics import Metrics

METRICS_PATH = "/metrics"


class MetricsListener:
    def __init__(self, metrics: Metrics, limits: Limits) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")
        app = web.Application()
        app.router.add_get(METRICS_PATH, self._get)
        self._metrics = metrics
        self._listener = GuardedListener(app, "metrics", limits, metrics)

    async def _get(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._executor, generate_latest, self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port`; returns the bound port (0 picks one)."""
        bound = await self._listener.start(host, port)
        warn_if_exposed("metrics", host, bound)
        return bound

    async def close(self) -> None:
        await self._listener.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
