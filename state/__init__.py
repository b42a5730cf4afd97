"""Redis-backed state: the write-ahead log, checkpoints, the shard layout and topology, the id
directory, definitions, forgetting, the embedded Redis server and the clients of any Redis."""
