"""daemon/agents"""
