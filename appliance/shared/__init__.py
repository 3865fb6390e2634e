"""Shared by every layer, with no storage and no HTTP: times, canonical JSON, URL hosts,
terminal-safe text, secret files, the error types and the wire types."""
