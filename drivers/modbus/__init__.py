"""The modbus driver: TCP, RTU and RTU-over-TCP polling with planned reads and checked writes."""
