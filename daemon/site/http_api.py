"""The daemon's HTTP control API (docs/api.yaml): status, plan and metrics to read; grid events and
operator overrides to write.

Reads are open (the server binds 127.0.0.1 unless told otherwise); every write needs
`Authorization: Bearer <token>` with the token from `http_api.token_file` or a systemd credential,
compared in constant time, and is refused before anything is parsed otherwise. Grid events go through
the daemon's one grid-event queue, so validation, journaling before the ack, idempotency and rejection
codes are those of MQTT (docs/protocol.md section 6); the response body is the `grid/event/ack` payload.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from typing import Annotated, Any, Literal, Protocol

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mullet.daemon.config import HttpApiSection
from mullet.daemon.core.drills import DrillRequest
from mullet.daemon.http_guard import GuardedListener, Limits, warn_if_exposed
from mullet.daemon.logs import RateLimiter
from mullet.daemon.metrics import Metrics
from mullet.daemon.metrics_http import metrics_response
from mullet.daemon.site.drills import DrillError, DrillService
from mullet.drivers.protocol import MAX_PAYLOAD_BYTES, GridEventAck, WireError, loads


class Daemon(Protocol):
    """What the API needs of the site daemon (daemon/site/app.py)."""

    api_token: str | None
    metrics: Metrics
    http_port: int | None

    def submit_grid_event_raw(self, raw: bytes, *, source: str) -> asyncio.Future[GridEventAck] | None: ...

    async def set_override(
        self, group_id: str, mode: str, until_s: float | None, note: str, by: str
    ) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def lifecycle_status(self) -> dict[str, Any]: ...

    def plan_document(self) -> dict[str, Any] | None: ...

    @property
    def drills(self) -> DrillService: ...


log = structlog.get_logger("mullet.http_api")

EVENT_PATH = "/v1/grid/event"  # the first path of the event API, kept as an alias of /v1/events
EVENTS_PATH = "/v1/events"
STATUS_PATH = "/v1/status"
PLAN_PATH = "/v1/plan"
OVERRIDE_PATH = "/v1/override"
DRILLS_PATH = "/v1/drills"
METRICS_PATH = "/metrics"
MAX_OVERRIDE_S = 86_400.0
# A journal commit takes milliseconds; this only bounds a wedged queue.
ACK_TIMEOUT_S = 10.0
# Wire refusals (drivers/protocol.py) are the caller's fault; daemon refusals are well-formed but refused.
_WIRE_CODES = frozenset({"too_large", "too_deep", "not_json", "not_object", "bad_version", "invalid_field"})
# GET /v1/status lists at most this many obligations, plan obligations and reasons; the rest is counted.
STATUS_MAX_LISTED = 50
_UNAVAILABLE_CODES = frozenset({"queue_full", "journal_unavailable", "timeout"})
# Refused writes are counted each (mullet_http_api_refusals_total); logged once a minute per reason.
REFUSAL_LOG_EVERY_S = 60.0


class OverrideRequest(BaseModel):
    """POST /v1/override: hold a group in `run` or `curtail` until `until` (or for `duration_s`);
    `auto` hands it back to the plan."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    group_id: Annotated[str, Field(min_length=1, max_length=64)]
    mode: Literal["run", "curtail", "auto"]
    duration_s: Annotated[float, Field(gt=0, le=MAX_OVERRIDE_S, allow_inf_nan=False)] | None = None
    until: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    note: Annotated[str, Field(max_length=200)] = ""


def status_for(ack: GridEventAck) -> int:
    if ack.accepted:
        return 200
    if ack.code in _WIRE_CODES:
        return 400
    if ack.code in _UNAVAILABLE_CODES:
        return 503
    return 422


def _error(status: int, code: str, message: str, **extra: str) -> web.Response:
    return web.json_response({"v": 1, "error": message, "code": code}, status=status, headers=extra or None)


def _digest(value: str) -> bytes:
    # Equal-length digests: compare_digest then leaks neither the content nor the token's length.
    return hashlib.sha256(value.encode()).digest()


def make_app(daemon: Daemon, section: HttpApiSection) -> web.Application:
    # Room for an oversized body to reach the wire check and get its `too_large` ack.
    app = web.Application(client_max_size=4 * MAX_PAYLOAD_BYTES)
    refusal_lines = RateLimiter(REFUSAL_LOG_EVERY_S)

    def refusal(request: web.Request) -> web.Response | None:
        """None if the request may write; else the response (never echoing what was sent)."""
        token = daemon.api_token  # read at each request: a SIGHUP reload may have rotated it
        if token is None:
            reason, response = "writes_disabled", _error(403, "writes_disabled", "no API token configured")
        else:
            given = request.headers.get("Authorization", "")
            if hmac.compare_digest(_digest(given), _digest(f"Bearer {token}")):
                return None
            reason = "unauthorized"
            response = _error(
                401,
                "unauthorized",
                "bearer token missing or wrong",
                **{"WWW-Authenticate": 'Bearer realm="mulletd"'},
            )
        daemon.metrics.api_refusals.labels(reason=reason).inc()
        held = refusal_lines.allow(reason)
        if held is not None:
            log.warning(
                "api write refused",
                code=reason,
                path=request.path,
                peer=request.remote,
                more_since_last_line=held,
            )
        return response

    async def post_event(request: web.Request) -> web.Response:
        refused = refusal(request)
        if refused is not None:
            daemon.metrics.grid_event_rejections.labels(reason=refused_code(refused)).inc()
            return refused
        raw = await request.read()
        reply = daemon.submit_grid_event_raw(raw, source=f"http:{request.remote}")
        if reply is None:
            return _error(400, "malformed", "payload refused and no id to acknowledge")
        try:
            ack = await asyncio.wait_for(asyncio.shield(reply), ACK_TIMEOUT_S)
        except TimeoutError:
            daemon.metrics.grid_event_rejections.labels(reason="timeout").inc()
            # Still queued: it may yet be accepted. The caller retries with the same id (idempotent).
            return _error(503, "timeout", "no ack within the timeout; retry with the same id")
        return web.json_response(ack.model_dump(), status=status_for(ack))

    async def post_override(request: web.Request) -> web.Response:
        refused = refusal(request)
        if refused is not None:
            return refused
        try:
            body = OverrideRequest.model_validate(loads(await request.read()))
        except WireError as exc:
            daemon.metrics.api_refusals.labels(reason=exc.reason).inc()
            return _error(400, exc.reason, exc.detail[:300])
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(400, "invalid", f"{where}: {first['msg']}"[:300])
        now_s = time.time()
        until_s: float | None = None
        if body.mode != "auto":
            if (body.duration_s is None) == (body.until is None):
                return _error(400, "invalid", "give exactly one of duration_s and until")
            until_s = body.until if body.until is not None else now_s + (body.duration_s or 0.0)
            if not now_s < until_s <= now_s + MAX_OVERRIDE_S:
                return _error(400, "invalid", f"until must be in the next {MAX_OVERRIDE_S:g} s")
        try:
            await daemon.set_override(
                body.group_id, body.mode, until_s, body.note, by=f"http:{request.remote}"
            )
        except ValueError:
            return _error(404, "unknown_group", f"group {body.group_id!r} is not configured")
        except KeyError:
            return _error(404, "no_override", f"group {body.group_id!r} has no override")
        return web.json_response(
            {"v": 1, "group_id": body.group_id, "mode": body.mode, "until": until_s, "note": body.note}
        )

    async def post_drill(request: web.Request) -> web.Response:
        refused = refusal(request)
        if refused is not None:
            daemon.metrics.drills.labels(outcome="rejected").inc()
            return refused
        try:
            body = DrillRequest.model_validate(loads(await request.read()))
            status, reply = await daemon.drills.request(body, by=f"http:{request.remote}")
        except WireError as exc:
            daemon.metrics.drills.labels(outcome="rejected").inc()
            return _error(400, exc.reason, exc.detail[:300])
        except ValidationError as exc:
            daemon.metrics.drills.labels(outcome="rejected").inc()
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(400, "invalid", f"{where}: {first['msg']}"[:300])
        except DrillError as exc:
            daemon.metrics.drills.labels(outcome="rejected").inc()
            return _error(exc.status, exc.code, exc.reason[:300])
        except TimeoutError:
            return _error(503, "timeout", "no answer from the grid-event queue within the timeout")
        return web.json_response(_finite(reply), status=status)

    async def delete_drill(request: web.Request) -> web.Response:
        refused = refusal(request)
        if refused is not None:
            return refused
        try:
            status, reply = await daemon.drills.cancel(
                request.match_info["drill_id"], by=f"http:{request.remote}"
            )
        except DrillError as exc:
            return _error(exc.status, exc.code, exc.reason[:300])
        except TimeoutError:
            return _error(503, "timeout", "no answer from the grid-event queue within the timeout")
        return web.json_response(reply, status=status)

    async def get_drills(request: web.Request) -> web.Response:
        return web.json_response({"v": 1, **daemon.drills.status()})

    async def get_status(request: web.Request) -> web.Response:
        body: dict[str, Any] = {"v": 1, **daemon.status(), **daemon.lifecycle_status()}
        return web.json_response(_finite(bounded_status(body)))

    async def get_plan(request: web.Request) -> web.Response:
        plan = daemon.plan_document()
        if plan is None:
            return _error(
                503, "no_plan", "no plan yet: waiting for the broker and the controllers' telemetry"
            )
        return web.json_response(_finite(plan))

    async def get_metrics(request: web.Request) -> web.Response:
        # Rendered off the loop, in the [metrics] listener's thread (daemon/metrics_http.py).
        return await metrics_response(daemon.metrics.registry)

    app.add_routes(
        [
            web.get(STATUS_PATH, get_status),
            web.get("/status", get_status),
            web.get(PLAN_PATH, get_plan),
            web.get("/plan", get_plan),
            web.post(EVENTS_PATH, post_event),
            web.post(EVENT_PATH, post_event),
            web.post("/events", post_event),
            web.post(OVERRIDE_PATH, post_override),
            web.post(DRILLS_PATH, post_drill),
            web.get(DRILLS_PATH, get_drills),
            web.delete(DRILLS_PATH + "/{drill_id}", delete_drill),
            web.post("/override", post_override),
            web.get(METRICS_PATH, get_metrics),
        ]
    )
    return app


def bounded_status(body: dict[str, Any], most: int = STATUS_MAX_LISTED) -> dict[str, Any]:
    """The status document with its lists of obligations and reasons cut to `most` items, each cut
    list's total beside it (`<key>_total`), so the document stays small whatever the book holds."""
    bounded = dict(body)
    _cut_listing(bounded, "obligations", most)
    plan = bounded.get("plan")
    if isinstance(plan, dict):
        plan = dict(plan)
        for key in ("active_obligations", "obligations", "reasons"):
            _cut_listing(plan, key, most)
        bounded["plan"] = plan
    return bounded


def _cut_listing(doc: dict[str, Any], key: str, most: int) -> None:
    items = doc.get(key)
    if isinstance(items, list | dict) and len(items) > most:
        doc[f"{key}_total"] = len(items)
        doc[key] = items[:most] if isinstance(items, list) else dict(list(items.items())[:most])


def refused_code(response: web.Response) -> str:
    return "unauthorized" if response.status == 401 else "writes_disabled"


def _finite(value: Any) -> Any:
    """JSON has no NaN: an unknown reading (NaN inside the daemon) is null, never 0."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def serve_http_api(daemon: Daemon, section: HttpApiSection, max_connections: int) -> None:
    """Serve until cancelled, at most `max_connections` at a time (daemon/fds.py sizes it); the bound
    port is left in `daemon.http_port` (port 0 picks one)."""
    limits = Limits(max_connections, section.header_timeout_s, section.body_timeout_s, section.idle_timeout_s)
    listener = GuardedListener(make_app(daemon, section), "api", limits, daemon.metrics)
    try:
        daemon.http_port = await listener.start(section.host, section.port)
        log.info(
            "http api listening",
            url=f"http://{section.host}:{daemon.http_port}",
            writes="enabled" if daemon.api_token is not None else "disabled (no token)",
            max_connections=max_connections,
        )
        warn_if_exposed("http api", section.host, daemon.http_port)
        await asyncio.Event().wait()
    finally:
        await listener.close()
