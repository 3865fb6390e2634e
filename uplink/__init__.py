"""Outbox delivery to the cloud: the box's sender (worker.py; what an answer means: answers.py, the
circuit breaker: breaker.py, the HTTP client and signed POST: client.py, its settings: settings.py,
what the CLI's uplink commands call: commands.py), the box reading back what the cloud holds of its
chains for a restore or a recovery (cloud_copy.py), the wire contract (protocol.py) and the reference
receiver (receiver.py, receiver_store.py: `venuebox ingest-server`)."""
