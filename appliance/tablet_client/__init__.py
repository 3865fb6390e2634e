"""A tablet's side of the protocol: the client library and the simulator (used by tests, benches
and `venuebox simulate`)."""
