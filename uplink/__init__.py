"""Outbox delivery to the cloud: the box's sender (worker.py), the wire contract (protocol.py) and
the reference receiver (receiver.py, receiver_store.py: `venuebox ingest-server`)."""
