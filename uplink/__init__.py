"""Outbox delivery to the cloud. Arrives with the uplink issue; the outbox itself is filled today."""
