"""Protocols and devices: typed readings in, typed commands out; imports nothing above policies/."""
