"""HTTP listeners (the API and /metrics) that stay bounded whatever clients do.

A hostile-input run held 1,100 idle sockets on the API at a 1,024-fd limit: the daemon ran out of file
descriptors, so status, metrics and the MQTT reconnect all failed, and a client that sends its headers
a byte at a time (slowloris) was never timed out. Here each listener

- holds at most `max_connections` connections; one more is closed as soon as it is accepted (its fd is
  back at once) and counted, so the listeners can never take the fds MQTT, Modbus and the journal need
  (daemon/fds.py sizes the caps under the process's RLIMIT_NOFILE);
- gives a request `header_timeout_s` from its first byte (or from the connection opening) to its last
  header, `body_timeout_s` to read its body, and an idle keep-alive connection `idle_timeout_s`;
- counts what it closed by reason (`mullet_http_connections_closed_total`) and logs it at most once a
  minute per reason, with the count, never once per connection.

aiohttp parses and answers; this module only owns the connections (a RequestHandler subclass, made by
our own asyncio server, and a middleware that marks a request's start and end).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import Counter, Gauge

from mullet.daemon.logs import RateLimiter

log = structlog.get_logger("mullet.http")

CloseReason = Literal["limit", "header_timeout", "body_timeout", "idle_timeout"]
# A normal end of a keep-alive connection: counted, not logged.
_QUIET: frozenset[str] = frozenset({"idle_timeout"})
LOG_EVERY_S = 60.0
_ACCEPT_ERROR = "socket.accept() out of system resource"


class ListenerMetrics(Protocol):
    """What a listener counts in: the site daemon's Metrics and the fleet dispatcher's FleetMetrics."""

    http_connections_open: Gauge
    http_connections_closed: Counter
    http_accept_errors: Counter


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    idle_timeout_s: float


class Guard:
    """One listener's connection count and what it closed."""

    def __init__(self, listener: str, limits: Limits, metrics: ListenerMetrics) -> None:
        self.listener = listener
        self.limits = limits
        self.open = 0
        self._metrics = metrics
        self._gauge = metrics.http_connections_open.labels(listener=listener)
        self._limiter = RateLimiter(LOG_EVERY_S)

    def opened(self) -> bool:
        """False (and counted) when the listener is full: the caller closes the connection."""
        if self.open >= self.limits.max_connections:
            self.closed("limit")
            return False
        self.open += 1
        self._gauge.set(self.open)
        return True

    def released(self) -> None:
        self.open -= 1
        self._gauge.set(self.open)

    def closed(self, reason: CloseReason) -> None:
        self._metrics.http_connections_closed.labels(listener=self.listener, reason=reason).inc()
        if reason in _QUIET:
            return
        held = self._limiter.allow(reason)
        if held is not None:
            log.warning(
                "http connections closed",
                listener=self.listener,
                reason=reason,
                more_since_last_line=held,
                open=self.open,
                max_connections=self.limits.max_connections,
            )


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a connection cap and a deadline for each phase."""

    def __init__(self, guard: Guard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._counted = False
        self._phase: Literal["request", "busy", "idle"] = "request"
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.opened():
            transport.close()  # before aiohttp sees it: the fd goes back on the next loop turn
            return
        self._counted = True
        super().connection_made(transport)
        self._arm("request", self._guard.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":
            self._arm("request", self._guard.limits.header_timeout_s)  # the next request's first bytes
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._counted:
            return  # refused at connection_made: aiohttp never knew it
        self._counted = False
        self._guard.released()
        self._disarm()
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._phase = "busy"
        self._disarm()  # the body has its own deadline (the middleware); handlers bound themselves

    def request_done(self) -> None:
        if self._counted:
            self._arm("idle", self._guard.limits.idle_timeout_s)

    def drop(self, reason: CloseReason) -> None:
        self._guard.closed(reason)
        self._disarm()
        self.force_close()

    def _arm(self, phase: Literal["request", "idle"], after_s: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = asyncio.get_running_loop().call_later(after_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        self.drop("header_timeout" if self._phase == "request" else "idle_timeout")


def _guard_middleware(body_timeout_s: float) -> Any:
    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        protocol = request.protocol
        guarded = protocol if isinstance(protocol, GuardedHandler) else None
        if guarded is not None:
            guarded.request_started()
        try:
            if request.can_read_body:
                try:
                    # Read (and cached for the handler's own read) within the deadline: a body sent a
                    # byte at a time holds a connection no longer than this.
                    await asyncio.wait_for(request.read(), body_timeout_s)
                except TimeoutError:
                    if guarded is not None:
                        guarded.drop("body_timeout")
                    raise web.HTTPRequestTimeout(text="request body not received in time") from None
            return await handler(request)
        finally:
            if guarded is not None:
                guarded.request_done()

    return guard


class GuardedListener:
    """An aiohttp application served on `host:port` under `limits`; `port` is the bound one."""

    def __init__(self, app: web.Application, listener: str, limits: Limits, metrics: ListenerMetrics) -> None:
        self.guard = Guard(listener, limits, metrics)
        self._metrics = metrics
        app.middlewares.append(_guard_middleware(limits.body_timeout_s))
        # aiohttp's own keep-alive close stays as a backstop behind our deadlines.
        self._runner = web.AppRunner(
            app, access_log=None, keepalive_timeout=limits.header_timeout_s + limits.idle_timeout_s
        )
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        await self._runner.setup()
        manager = self._runner.server
        assert manager is not None
        loop = asyncio.get_running_loop()
        count_accept_errors(loop, self._metrics)
        backstop_s = self.guard.limits.header_timeout_s + self.guard.limits.idle_timeout_s

        def protocol() -> GuardedHandler:
            return GuardedHandler(
                self.guard, manager, loop=loop, keepalive_timeout=backstop_s, access_log=None
            )

        self._server = await loop.create_server(protocol, host, port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._runner.cleanup()


def count_accept_errors(loop: asyncio.AbstractEventLoop, metrics: ListenerMetrics) -> None:
    """Count asyncio's failed accepts (EMFILE and kin) in `mullet_http_accept_errors_total`; the log
    line asyncio writes for each is rate-limited in daemon/logs.py. Installed once per loop."""
    previous = loop.get_exception_handler()
    if getattr(previous, "_counts_accept_errors", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(_ACCEPT_ERROR):
            metrics.http_accept_errors.inc()
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._counts_accept_errors = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def beyond_loopback(host: str) -> bool:
    """Whether a listener bound to `host` can be reached from other machines (names other than
    localhost count as reachable: they resolve to whatever the network says)."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def warn_if_exposed(listener: str, host: str, port: int) -> None:
    if beyond_loopback(host):
        log.warning(
            f"{listener} listens beyond loopback",
            address=f"{host}:{port}",
            hint="bind 127.0.0.1, or keep it behind a firewall or reverse proxy (docs/operations.md)",
        )
