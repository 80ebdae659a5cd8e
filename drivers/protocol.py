"""Wire protocol v1 (docs/protocol.md): topics and JSON payloads, validated at the edge.

Unknown fields are ignored so newer peers can add them; anything else that does not validate is a
`WireError` whose `reason` is one of a small fixed set, so it can label a metric.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_PAYLOAD_BYTES = 16_384
WIRE_VERSION = 1
# Deepest nesting of arrays and objects a JSON input may have: v1 payloads need 3. Checked before
# parsing, since Python's json recurses once per level and fails with a RecursionError near 1000.
MAX_JSON_DEPTH = 32
# Event ids: 1-128 of these, so an id is safe in a log line, a journal row, a report and a file name.
EVENT_ID_CHARS = "A-Za-z0-9._:@+=-"
_EVENT_ID = re.compile(f"[{EVENT_ID_CHARS}]{{1,128}}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_TO_SQUARE = bytes.maketrans(b"{}", b"[]")

Kw = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Ts = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Seq = Annotated[int, Field(ge=0)]
Epoch = Annotated[int, Field(ge=1)]


def is_event_id(value: str) -> bool:
    """Whether `value` is a valid grid event id (docs/protocol.md section 6.1)."""
    return _EVENT_ID.fullmatch(value) is not None


def _event_id(value: str) -> str:
    if not is_event_id(value):
        raise ValueError(f"ids are 1-128 of the characters {EVENT_ID_CHARS}")
    return value


def _printable(value: str) -> str:
    # Unicode categories C* are control, format (bidi overrides, zero-width), surrogate, unassigned.
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise ValueError("control and format characters (bidi overrides included) are not allowed")
    return value


EventId = Annotated[str, AfterValidator(_event_id)]
Text = Annotated[str, AfterValidator(_printable)]

P = TypeVar("P", bound=BaseModel)


class _Payload(BaseModel):
    # strict: "3" is not a seq and true is not a power reading; ints are still fine for floats.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)
    v: Literal[1] = 1


class GroupSetpoint(_Payload):
    seq: Seq
    mode: Literal["run", "curtail"]
    power_kw: Kw | None = None
    trip_stage: Annotated[int, Field(ge=0)] | None = None
    ts: Ts
    # Active/standby: the commanding daemon's leader epoch; controllers ignore a lower one (fencing).
    epoch: Epoch | None = None


class Trip(_Payload):
    seq: Seq
    stage: Annotated[int, Field(ge=0)]
    ts: Ts
    epoch: Epoch | None = None


class GroupState(_Payload):
    seq_applied: Seq | None = None
    mode: Literal["run", "curtail", "ramping"]
    power_kw: Kw
    hashrate_ths: Kw = 0.0
    miners_online: Annotated[int, Field(ge=0)] = 0
    ts: Ts


class TenantState(_Payload):
    power_kw: Kw
    demand_kw: Kw
    ts: Ts


class TenantSetpoint(_Payload):
    seq: Seq
    power_cap_kw: Kw | None = None
    ts: Ts
    epoch: Epoch | None = None  # as GroupSetpoint: a lower one than seen is ignored (fencing)


class GridEvent(_Payload):
    id: EventId
    # `base_point`: mining consumption follows kw (an ERCOT CLR's SCED base point); a later one replaces it.
    kind: Literal["limit", "reduce", "base_point", "cancel"]
    kw: Annotated[float, Field(allow_inf_nan=False)] | None = None
    start: Ts | None = None
    end: Ts | None = None
    program: Annotated[Text, Field(max_length=64)] = "generic"
    source: Annotated[Text, Field(max_length=128)] | None = None
    # The program lets the site cap AI tenants' flexible shares once all mining is shed.
    allow_ai_flex: bool = False
    # Immediate deployment (e.g. ERCOT FFR): fire this armed under-frequency stage on the fast path.
    trip_stage: Annotated[int, Field(ge=1, le=16)] | None = None

    @model_validator(mode="after")
    def _base_point_fields(self) -> GridEvent:
        # A base point sets the mining budget: it fires no trip stage and never caps AI tenants.
        if self.kind == "base_point" and self.trip_stage is not None:
            raise ValueError("a base_point takes no trip_stage")
        if self.kind == "base_point" and self.allow_ai_flex:
            raise ValueError("a base_point never allows AI flex")
        return self


class GridEventAck(_Payload):
    id: str
    accepted: bool
    reason: str
    # Bounded: `accepted`, `duplicate`, `cancelled`, or the refusal's code (also a metric label).
    code: str = "accepted"


class Price(_Payload):
    usd_per_mwh: Annotated[float, Field(allow_inf_nan=False)]
    ts: Ts


class WireError(ValueError):
    """A payload or topic we refuse. `reason` is a bounded metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(payload: BaseModel) -> bytes:
    # An absent epoch stays off the wire: a daemon without a leader lease sends v1 exactly as before.
    omit = {"epoch"} if getattr(payload, "epoch", 0) is None else None
    return payload.model_dump_json(exclude=omit).encode()


def encode_trip(seq: int, stage: int, ts: float, epoch: int | None) -> bytes:
    """`encode(Trip(...))` for the fast path, without building and validating a model there (~80 us
    on the 2-core VM, bench/trip_latency.py): the values are the daemon's own (a counter, an armed
    stage, the wall clock, its lease epoch). tests/test_wire.py holds it to `encode`."""
    if epoch is None:
        return b'{"v":1,"seq":%d,"stage":%d,"ts":%r}' % (seq, stage, ts)
    return b'{"v":1,"seq":%d,"stage":%d,"ts":%r,"epoch":%d}' % (seq, stage, ts, epoch)


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit` (or are unbalanced with that many opened):
    strings dropped, brackets kept, then one innermost level removed per round, at C speed."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(_TO_SQUARE, _NOT_BRACKET)
    if b"[" * (limit + 1) in brackets:
        return True
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if not shorter or len(shorter) == len(brackets):
            break
        brackets = shorter
    return bool(shorter)


def loads(raw: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Any:
    """Parse a JSON input from outside: size, then nesting depth, then JSON, each a bounded WireError."""
    if len(raw) > max_bytes:
        raise WireError("too_large", f"{len(raw)} bytes > {max_bytes}")
    if too_deep(raw):
        raise WireError("too_deep", f"arrays and objects nest deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError("not_json", str(exc)[:200]) from None


def event_id_of(raw: bytes) -> str | None:
    """The `id` of a grid event payload that failed validation, if it is a valid id (to address its ack)."""
    try:
        data = loads(raw)
    except WireError:
        return None
    event_id = data.get("id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) and is_event_id(event_id) else None


def decode(model: type[P], raw: bytes) -> P:
    data = loads(raw)
    if not isinstance(data, dict):
        raise WireError("not_object", f"expected a JSON object, got {type(data).__name__}")
    if data.get("v") != WIRE_VERSION:
        raise WireError("bad_version", f"v={data.get('v')!r}, this daemon speaks v{WIRE_VERSION}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise WireError("invalid_field", f"{where}: {first['msg']}") from None


def decode_online(raw: bytes) -> bool:
    """LWT payloads are the bare strings `1` and `0`."""
    text = raw.strip()
    if text == b"1":
        return True
    if text == b"0":
        return False
    raise WireError("invalid_field", f"online must be 1 or 0, got {raw[:20]!r}")


TopicKind = Literal[
    "group_set",
    "group_state",
    "group_online",
    "trip",
    "tenant_state",
    "tenant_set",
    "tenant_online",
    "grid_event",
    "grid_event_ack",
    "grid_price",
    "daemon_online",
    "daemon_plan",
]


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    kind: TopicKind
    subject: str | None = None  # group_id or tenant_id where the topic names one


class Topics:
    """Builds and parses the topics under one site's root, e.g. `mullet/site-1/`."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self._prefix = self.root + "/"

    def group_set(self, group_id: str) -> str:
        return f"{self.root}/mining/{group_id}/set"

    def group_state(self, group_id: str) -> str:
        return f"{self.root}/mining/{group_id}/state"

    def group_online(self, group_id: str) -> str:
        return f"{self.root}/mining/{group_id}/online"

    @property
    def trip(self) -> str:
        return f"{self.root}/mining/trip"

    def tenant_state(self, tenant_id: str) -> str:
        return f"{self.root}/ai/{tenant_id}/state"

    def tenant_set(self, tenant_id: str) -> str:
        return f"{self.root}/ai/{tenant_id}/set"

    def tenant_online(self, tenant_id: str) -> str:
        return f"{self.root}/ai/{tenant_id}/online"

    @property
    def grid_event(self) -> str:
        return f"{self.root}/grid/event"

    @property
    def grid_event_ack(self) -> str:
        return f"{self.root}/grid/event/ack"

    @property
    def grid_price(self) -> str:
        return f"{self.root}/grid/price"

    @property
    def daemon_online(self) -> str:
        return f"{self.root}/daemon/online"

    @property
    def daemon_plan(self) -> str:
        return f"{self.root}/daemon/plan"

    def daemon_subscriptions(self) -> list[str]:
        return [
            f"{self.root}/mining/+/state",
            f"{self.root}/mining/+/online",
            f"{self.root}/ai/+/state",
            f"{self.root}/ai/+/online",
            self.grid_event,
            self.grid_price,
        ]

    def parse(self, topic: str) -> ParsedTopic:
        if not topic.startswith(self._prefix):
            raise WireError("unknown_topic", topic[:200])
        parts = topic[len(self._prefix) :].split("/")
        match parts:
            case ["mining", "trip"]:
                return ParsedTopic("trip")
            case ["mining", group_id, "set" | "state" | "online" as leaf] if group_id:
                return ParsedTopic(_GROUP_KINDS[leaf], group_id)
            case ["ai", tenant_id, "set" | "state" | "online" as leaf] if tenant_id:
                return ParsedTopic(_TENANT_KINDS[leaf], tenant_id)
            case ["grid", "event"]:
                return ParsedTopic("grid_event")
            case ["grid", "event", "ack"]:
                return ParsedTopic("grid_event_ack")
            case ["grid", "price"]:
                return ParsedTopic("grid_price")
            case ["daemon", "online"]:
                return ParsedTopic("daemon_online")
            case ["daemon", "plan"]:
                return ParsedTopic("daemon_plan")
        raise WireError("unknown_topic", topic[:200])


_GROUP_KINDS: dict[str, TopicKind] = {"set": "group_set", "state": "group_state", "online": "group_online"}
_TENANT_KINDS: dict[str, TopicKind] = {
    "set": "tenant_set",
    "state": "tenant_state",
    "online": "tenant_online",
}
