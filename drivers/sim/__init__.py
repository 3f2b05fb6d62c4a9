"""The simulated driver: deterministic readings without hardware."""
