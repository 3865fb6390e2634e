"""The uplink's HTTP side: the client for a target (TLS verified, explicit timeouts, no redirects)
and one signed POST of a batch, its answer or network failure as an ``Outcome`` (uplink/answers.py)."""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx

from appliance import __version__
from appliance.core.uplink_state import Target
from uplink.answers import Outcome, classify, describe_network_error
from uplink.protocol import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, signature
from uplink.settings import UplinkSettings


async def post_batch(
    client: httpx.AsyncClient,
    target: Target,
    token: str,
    box_id: str,
    batch_id: str,
    body: bytes,
    settings: UplinkSettings,
    clock_offset_s: float = 0.0,
) -> Outcome:
    """POST one signed batch (PROTOCOL.md "Uplink") within the total timeout; the answer, or the
    network failure, as an ``Outcome``."""
    signed_at = int(time.time() + clock_offset_s)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        IDEMPOTENCY_HEADER: batch_id,
        SIGNATURE_HEADER: signature(token, signed_at, body),
    }
    try:
        async with asyncio.timeout(settings.total_timeout_s):
            response = await client.post(
                f"{target.url}/v1/boxes/{box_id}/records", content=body, headers=headers
            )
    except (httpx.HTTPError, TimeoutError, ssl.SSLError, OSError) as exc:
        return Outcome("retry", describe_network_error(exc, target.url, settings))
    return classify(response, target.url, box_id, time.time())


def new_client(
    target: Target, settings: UplinkSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An HTTP client for ``target``: TLS verified (against its CA bundle when it has one), every
    timeout explicit, no redirects (a redirect would carry the token elsewhere)."""
    verify: ssl.SSLContext | bool = True
    if target.ca_file is not None:
        verify = ssl.create_default_context(cafile=str(target.ca_file))
    s = settings
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=s.connect_timeout_s,
            read=s.read_timeout_s,
            write=s.read_timeout_s,
            pool=s.connect_timeout_s,
        ),
        verify=verify,
        transport=transport,
        headers={"User-Agent": f"venuebox/{__version__}"},
        follow_redirects=False,
    )
