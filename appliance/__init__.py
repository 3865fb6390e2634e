"""venuebox appliance: config, storage, domain rules and the composition roots (cli, daemon)."""

__version__ = "0.1.0"
