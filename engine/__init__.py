"""Pure domain logic of the occupancy engine: no Ray, gRPC, Redis or ClickHouse in here."""
