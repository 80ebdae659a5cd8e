"""`mulletd replay`: the site's controller core and simulated physics over recorded or scenario inputs,
in simulated time: what a configuration would have earned, delivered and cost (docs/replay.md)."""
