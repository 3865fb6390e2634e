"""The core: storage, the ledger and its chains, event, devices, freeze, audit, outbox, personal data,
keys, backup, export, tabulation. Imports nothing outward (see docs/architecture.md)."""
