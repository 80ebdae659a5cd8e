"""The PDU driver's public names in one place (client, pool, types, writes). By job: `types` (reasons,
results, config shapes), `writes` (switch requests), `client` (one PDU), `pool` (all of them, armed
cuts)."""

from mullet.drivers.pdu.client import ArmedWrite, PduClient
from mullet.drivers.pdu.pool import ArmedWrites, PduPool, PreparedPoolSwitch
from mullet.drivers.pdu.types import (
    FAILURE_REASONS,
    OutletRefLike,
    OutletRefs,
    PduSpec,
    PduState,
    PoolResult,
    SwitchResult,
)
from mullet.drivers.pdu.writes import PreparedSwitch

__all__ = [
    "FAILURE_REASONS",
    "ArmedWrite",
    "ArmedWrites",
    "OutletRefLike",
    "OutletRefs",
    "PduClient",
    "PduPool",
    "PduSpec",
    "PduState",
    "PoolResult",
    "PreparedPoolSwitch",
    "PreparedSwitch",
    "SwitchResult",
]
