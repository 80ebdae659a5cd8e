"""Pure rules: the policy engine, the trip trigger, grid programs, scoring; no I/O, no clock."""
