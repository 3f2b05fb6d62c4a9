"""Real peers for tests: Mosquitto, TLS material."""
