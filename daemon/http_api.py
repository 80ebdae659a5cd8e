"""HTTP event API: the `grid/event` payload over HTTP, answered with the same ack once journaled.

For aggregators that speak HTTP rather than MQTT. The event goes through the daemon's one grid-event
queue, so validation, journaling before the ack, idempotency and rejection codes are those of MQTT
(docs/protocol.md section 6); the response body is the `grid/event/ack` payload.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from mullet.daemon.config import HttpApiSection
from mullet.drivers.wire import MAX_PAYLOAD_BYTES, GridEventAck

if TYPE_CHECKING:
    from mullet.daemon.app import Daemon

log = structlog.get_logger("mullet.http_api")

EVENT_PATH = "/v1/grid/event"
STATUS_PATH = "/v1/status"
# A journal commit takes milliseconds; this only bounds a wedged queue.
ACK_TIMEOUT_S = 10.0
# Wire refusals (drivers/wire.py) are the caller's fault; daemon refusals are well-formed but refused.
_WIRE_CODES = frozenset({"too_large", "not_json", "not_object", "bad_version", "invalid_field"})
_UNAVAILABLE_CODES = frozenset({"queue_full", "journal_unavailable", "timeout"})


def status_for(ack: GridEventAck) -> int:
    if ack.accepted:
        return 200
    if ack.code in _WIRE_CODES:
        return 400
    if ack.code in _UNAVAILABLE_CODES:
        return 503
    return 422


def make_app(daemon: Daemon, section: HttpApiSection) -> web.Application:
    # Room for an oversized body to reach the wire check and get its `too_large` ack.
    app = web.Application(client_max_size=4 * MAX_PAYLOAD_BYTES)

    def authorised(request: web.Request) -> bool:
        if section.token is None:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {section.token}".encode())

    async def post_event(request: web.Request) -> web.Response:
        if not authorised(request):
            daemon.metrics.grid_event_rejections.labels(reason="unauthorized").inc()
            log.warning("grid event refused", code="unauthorized", peer=request.remote)
            return web.json_response({"v": 1, "error": "unauthorized", "code": "unauthorized"}, status=401)
        raw = await request.read()
        reply = daemon.submit_grid_event_raw(raw, source=f"http:{request.remote}")
        if reply is None:
            return web.json_response(
                {"v": 1, "error": "payload refused and no id to acknowledge", "code": "malformed"},
                status=400,
            )
        try:
            ack = await asyncio.wait_for(asyncio.shield(reply), ACK_TIMEOUT_S)
        except TimeoutError:
            daemon.metrics.grid_event_rejections.labels(reason="timeout").inc()
            # Still queued: it may yet be accepted. The caller retries with the same id (idempotent).
            return web.json_response(
                {"v": 1, "error": "no ack within the timeout; retry with the same id", "code": "timeout"},
                status=503,
            )
        return web.json_response(ack.model_dump(), status=status_for(ack))

    async def get_status(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.json_response({"v": 1, "error": "unauthorized", "code": "unauthorized"}, status=401)
        body: dict[str, Any] = {"v": 1, **daemon.status()}
        return web.json_response(body)

    app.add_routes([web.post(EVENT_PATH, post_event), web.get(STATUS_PATH, get_status)])
    return app


async def serve_http_api(daemon: Daemon, section: HttpApiSection) -> None:
    """Serve until cancelled; the bound port is left in `daemon.http_port` (port 0 picks one)."""
    runner = web.AppRunner(make_app(daemon, section), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, section.host, section.port)
        await site.start()
        server = site._server  # aiohttp keeps the asyncio server here; the only way to learn port 0
        sockets = getattr(server, "sockets", None) or []
        daemon.http_port = sockets[0].getsockname()[1] if sockets else section.port
        log.info("http api listening", url=f"http://{section.host}:{daemon.http_port}{EVENT_PATH}")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
