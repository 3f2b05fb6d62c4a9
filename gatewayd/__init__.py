"""gatewayd: an edge gateway daemon for embedded Linux."""

__version__ = "0.1.0"
