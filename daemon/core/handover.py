"""The handover document: what a leader hands its standby beyond the retained setpoints.

The leader publishes it (retained `daemon/handover`) before each grid-event ack and after each cycle
that changes it: its obligation book (with each obligation's event, so a sender's retry is a
duplicate), cancelled ids, latched under-frequency stages, hard-cut groups, the restore ramp ledger
and operator overrides (docs/fleet.md section 6). Built from the controller core's state
(`SiteController.handover`) and adopted by it at a takeover (`SiteController.adopt`); this module
builds and reads it (`handover_document`, `Handover.parse`) so the two sides cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mullet.drivers.protocol import GridEvent, WireError, loads
from mullet.policies.model import Obligation, Override

# The book, bounded by control.max_obligations and the cancelled history (policies/obligations.py).
HANDOVER_MAX_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class Handover:
    """What the leader hands a standby beyond the retained setpoints."""

    node_id: str
    epoch: int
    seq: int
    obligations: tuple[tuple[GridEvent | None, Obligation], ...] = ()  # event None: an `ufr-` hold
    cancelled: frozenset[str] = frozenset()
    latched_stages: frozenset[int] = frozenset()
    hard_cut: frozenset[str] = frozenset()
    restores: tuple[tuple[float, float], ...] = ()
    overrides: tuple[Override, ...] = ()

    @classmethod
    def parse(cls, raw: bytes) -> Handover:
        """Validate a `daemon/handover` payload; WireError (bounded reason) when it does not."""
        try:
            data = loads(raw, max_bytes=HANDOVER_MAX_BYTES)
            if not isinstance(data, dict) or data.get("v") != 1:
                raise WireError("bad_version", "handover must be a v1 object")
            obligations = []
            for item in data["obligations"]:
                event = None if item["event"] is None else GridEvent.model_validate(item["event"])
                obligations.append((event, Obligation(**item["obligation"])))
            return cls(
                node_id=str(data["node_id"]),
                epoch=int(data["epoch"]),
                seq=int(data["seq"]),
                obligations=tuple(obligations),
                cancelled=frozenset(str(i) for i in data["cancelled"]),
                latched_stages=frozenset(int(s) for s in data["latched_stages"]),
                hard_cut=frozenset(str(g) for g in data["hard_cut"]),
                restores=tuple((float(t), float(kw)) for t, kw in data["restores"]),
                overrides=tuple(
                    Override(str(o["group_id"]), o["mode"], float(o["until"]), str(o["note"]))
                    for o in data["overrides"]
                ),
            )
        except WireError:
            raise
        except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise WireError("invalid_field", f"handover: {type(exc).__name__}: {exc}"[:300]) from None


def handover_document(handover: Handover) -> dict[str, Any]:
    """The JSON body of `daemon/handover` (without `ts`, so an unchanged one compares equal)."""
    return {
        "v": 1,
        "node_id": handover.node_id,
        "epoch": handover.epoch,
        "seq": handover.seq,
        "obligations": [
            {"event": None if e is None else e.model_dump(), "obligation": asdict(o)}
            for e, o in handover.obligations
        ],
        "cancelled": sorted(handover.cancelled),
        "latched_stages": sorted(handover.latched_stages),
        "hard_cut": sorted(handover.hard_cut),
        "restores": [list(r) for r in handover.restores],
        "overrides": [
            {"group_id": o.group_id, "mode": o.mode, "until": o.until_s, "note": o.note}
            for o in handover.overrides
        ],
    }
