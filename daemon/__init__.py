"""What `mulletd` runs (site daemon, edge agents, fleet dispatcher) and, at this level, what they share."""
