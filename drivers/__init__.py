"""Drivers shipped with gatewayd (installed as ``gatewayd.drivers``)."""
