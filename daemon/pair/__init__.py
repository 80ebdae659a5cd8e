"""daemon/pair"""
