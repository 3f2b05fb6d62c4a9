"""The durable store: SQLite in WAL mode, with one persisted cursor per uplink."""
