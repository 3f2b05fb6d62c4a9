"""Command-line entry points: gatewayd (the daemon) and gatewayctl (the operator's tool)."""
