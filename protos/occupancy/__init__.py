"""The protobuf package occupancy.* (its versions as subpackages)."""
