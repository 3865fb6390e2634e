"""HTTP plumbing shared by the box's APIs (edge_api), the cloud's reference receiver (uplink/receiver.py)
and the box's clients: problem+json, request ids, body decoding, JSON answers, HTTP metrics, the
embedded uvicorn server, backoff and Retry-After. It knows no box rule: it imports no core."""
