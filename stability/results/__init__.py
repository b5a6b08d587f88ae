"""Results at rest: the SQLite store, the environment fingerprint, and the tidy tables."""
