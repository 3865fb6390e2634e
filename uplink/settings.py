"""The uplink's settings: the box's ``uplink_*`` settings (appliance/core/config.py) without their
prefix, read from its ``Config`` (the defaults are the config's own)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.core.config import DEFAULTS, Config


@dataclass(frozen=True, kw_only=True)
class UplinkSettings:
    """The box's ``uplink_*`` settings without their prefix (``appliance/core/config.py``, its defaults)."""

    batch_max_records: int = DEFAULTS.uplink_batch_max_records
    batch_max_bytes: int = DEFAULTS.uplink_batch_max_bytes
    connect_timeout_s: float = DEFAULTS.uplink_connect_timeout_s
    read_timeout_s: float = DEFAULTS.uplink_read_timeout_s
    total_timeout_s: float = DEFAULTS.uplink_total_timeout_s
    backoff_base_s: float = DEFAULTS.uplink_backoff_base_s
    backoff_cap_s: float = DEFAULTS.uplink_backoff_cap_s
    breaker_failures: int = DEFAULTS.uplink_breaker_failures
    poll_s: float = DEFAULTS.uplink_poll_s
    retention_h: float = DEFAULTS.uplink_retention_h

    @classmethod
    def from_config(cls, config: Config) -> UplinkSettings:
        return cls(**{name: getattr(config, "uplink_" + name) for name in cls.__dataclass_fields__})
