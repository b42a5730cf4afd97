"""Redis-backed state: the write-ahead log, checkpoints, the shard layout, the id directory,
the definitions."""
