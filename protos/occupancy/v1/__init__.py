"""The occupancy.v1 contract (occupancy.proto) and its generated stubs."""
