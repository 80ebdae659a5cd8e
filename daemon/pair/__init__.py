"""Active/standby at one site: the leader lease, the role that drives the core, the standby's warm copy."""
