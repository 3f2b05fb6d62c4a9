"""Serial driver: framed and line protocols, NMEA, polled ASCII instruments."""
