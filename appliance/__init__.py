"""venuebox appliance, in the layers of docs/architecture.md (shell, web, core, storage, shared)."""

__version__ = "0.1.0"
