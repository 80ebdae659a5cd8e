"""daemon/site"""
