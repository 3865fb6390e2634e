"""A tablet's side of the protocol, used by tests, benches and `venuebox simulate`:

* `client`: `TabletClient` (pairing, the event, sending the queue, heartbeats) and `pair_with_url`;
* `answers`: what the box's answer to a sheet means for it (stored, held, or wait);
* `sheet_queue`: `make_sheet` and the durable on-disk queue (`SheetQueue`);
* `state`: the pairing, the pin and the cached event kept in the state dir;
* `pinning`: certificate fingerprints, the pairing URL, reading what a box presents;
* `discovery`: finding boxes by mDNS (`discover`, `BoxAddress`);
* `errors`: what the client raises;
* `simulator`: simulated judge tablets against a real box (`run_simulation`).
"""
