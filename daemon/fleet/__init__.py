"""daemon/fleet"""
