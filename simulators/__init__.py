"""Simulated site devices: the same protocols as the real ones, seen from the device side.

Used by tests, benchmarks and `mulletd simulate`/`demo`. `SimulatedSite` wires everything from one
`SimSiteSpec` (daemon/site/simulated.py builds it from a site config); the pieces (meter, PDU, mining
and AI controllers) are usable on their own.
"""

from mullet.simulators.site import SimSiteSpec, SimulatedSite

__all__ = ["SimSiteSpec", "SimulatedSite"]
