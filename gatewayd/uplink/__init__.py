"""Outbound uplinks to central brokers."""
