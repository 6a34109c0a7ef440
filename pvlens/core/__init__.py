"""The bottom layer: errors, settings read from the environment, cache keys, append-only logs, statistics and
chat formatting. Imports nothing else from pvlens."""
