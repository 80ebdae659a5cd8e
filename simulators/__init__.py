"""Simulated site devices: the same protocols as the real ones, seen from the device side.

Used by tests, benchmarks and `mulletd simulate`/`demo`. `SimulatedSite` wires everything from one
`Config`; the pieces (meter, PDU, mining and AI controllers) are usable on their own.
"""

from mullet.simulators.site import SimulatedSite, simulate

__all__ = ["SimulatedSite", "simulate"]
