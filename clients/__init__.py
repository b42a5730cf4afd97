"""The Ray boundary: typed clients of the shard families and of history."""
