"""daemon/records"""
