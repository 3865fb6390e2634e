"""The names docs/protocol.md fixes for finding and reaching a box: the DNS-SD service type a box
announces, the TXT record's protocol version, and the path of the tablet API, which the TXT ``api``
key advertises and the tablet API is mounted at."""

from __future__ import annotations

SERVICE_TYPE = "_venuebox._tcp.local."
TXT_VERSION = "1"  # the TXT ``v`` key
API_PATH = "/api/v1"
