"""The PDU driver's public names in one place (client, pool, types, writes). By job: `types` (reasons,
results, config shapes), `pdu_writes` (switch requests), `pdu_client` (one PDU), `pdu_pool` (all of
them, armed cuts). Kept for importers that predate the split (daemon/site/app.py, daemon/site/fastpath.py,
daemon/site/executor.py); new code imports from the module that defines a name."""

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
