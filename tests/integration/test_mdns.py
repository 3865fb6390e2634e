"""The box's mDNS advertisement, seen by real clients on this host: python-zeroconf and dig.

Every box gets a display name unique to the test run, so two runs on one host never rename each
other. Clients on port 5353 ask QM (multicast-answered) questions: a unicast answer sent to another
responder on this host reaches only one of the sockets sharing port 5353, possibly the box's own
(on a venue LAN the tablets are other hosts and the library's default QU first query is fine).
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from zeroconf import DNSQuestionType, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from appliance.shared.hostnet import current_addresses, host_label
from appliance.shared.protocol_names import SERVICE_TYPE
from appliance.shell.mdns import Advertisement, advertised_addresses

pytestmark = pytest.mark.timeout(40)

BOX_ID = "7d1e6f0a-3c1b-4a47-9a8e-0d6c2f1b5e42"
FINGERPRINT = "3f9c" * 16


def run(coro: Coroutine[Any, Any, None], timeout_s: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout_s))


def unique_name() -> tuple[str, str]:
    """A display name for this test run and the host label it must get."""
    token = uuid.uuid4().hex[:6]
    return f"Main stage box {token}", f"main-stage-box-{token}"


@asynccontextmanager
async def advertised(name: str, **settings: Any) -> AsyncIterator[Advertisement]:
    advertisement = Advertisement(
        **{"name": name, "box_id": BOX_ID, "event_id": "spring-cup", "port": 8443, **settings}
    )
    await advertisement.start()
    try:
        yield advertisement
    finally:
        await advertisement.stop()


async def lookup(instance_name: str, client: AsyncZeroconf | None = None) -> AsyncServiceInfo | None:
    """Resolve one instance (SRV, TXT, addresses) with ``client``, or with a fresh one-shot querier
    (ephemeral port, like dig: answered by unicast at once, without the multicast rate limit)."""
    if client is None:
        async with AsyncZeroconf(unicast=True) as fresh:
            return await lookup(instance_name, fresh)
    info = AsyncServiceInfo(SERVICE_TYPE, f"{instance_name}.{SERVICE_TYPE}")
    found = await info.async_request(client.zeroconf, 3000, question_type=DNSQuestionType.QM)
    return info if found else None


class Browser:
    """A python-zeroconf browser recording every state change by instance name."""

    def __init__(self, client: AsyncZeroconf) -> None:
        self.changes: list[tuple[str, ServiceStateChange]] = []
        self._browser = AsyncServiceBrowser(
            client.zeroconf, SERVICE_TYPE, handlers=[self._on_change], question_type=DNSQuestionType.QM
        )

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        self.changes.append((name[: -len(SERVICE_TYPE) - 1], state_change))

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> float:
        """Seconds until ``condition()`` held; fails the test after ``timeout_s``."""
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > timeout_s:
                pytest.fail(f"browser saw only {self.changes} after {timeout_s}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    def saw(self, instance: str, state: ServiceStateChange) -> bool:
        return (instance, state) in self.changes

    async def cancel(self) -> None:
        await self._browser.async_cancel()


async def dig(name: str, rtype: str, answered: Callable[[list[str]], bool]) -> list[str]:
    """dig's short answer to a legacy unicast query sent to the mDNS port on loopback.

    Asks again with a fresh dig (a new source port) until ``answered(lines)``: when another
    responder on this host shares 127.0.0.1:5353, the kernel's SO_REUSEPORT hash hands each query to
    one of them, and a new source port soon reaches ours."""
    lines: list[str] = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        process = await asyncio.create_subprocess_exec(
            "dig", "-p", "5353", "@127.0.0.1", name, rtype, "+time=1", "+tries=1", "+short",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, _ = await asyncio.wait_for(process.communicate(), 5)
        lines = [line for line in stdout.decode().splitlines() if line and not line.startswith(";")]
        if process.returncode == 0 and answered(lines):
            break
    return lines


def test_host_name_is_the_display_name_made_dns_safe() -> None:
    assert host_label("Main stage box") == "main-stage-box"
    assert host_label("Bühne 2 / Hall B.") == "buhne-2-hall-b"
    assert host_label("!!!") == "venuebox"


def test_started_box_is_found_with_its_txt_and_host_name() -> None:
    name, host = unique_name()

    async def scenario() -> None:
        async with advertised(name, tls_fingerprint=FINGERPRINT) as box, AsyncZeroconf() as client:
            assert box.instance_name == name
            browser = Browser(client)
            await browser.wait_for(lambda: browser.saw(name, ServiceStateChange.Added), 5)
            await browser.cancel()
            info = await lookup(name, client)
            assert info is not None
            assert info.port == 8443
            assert info.server == f"{host}.local."
            assert box.host_name == f"{host}.local."
            assert info.decoded_properties == {
                "v": "1",
                "box": BOX_ID,
                "event": "spring-cup",
                "api": "/api/v1",
                "tls": "1",
                "fp": FINGERPRINT,
            }
            assert set(info.parsed_addresses()) == set(box.addresses)

    run(scenario())


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) is not installed")
def test_dig_finds_the_box_by_service_type_and_host_name() -> None:
    name, host = unique_name()

    async def scenario() -> None:
        # Only the box's own responder runs in this process: a legacy unicast query is answered
        # by whichever socket the kernel picks on 127.0.0.1:5353.
        async with advertised(name) as box:
            instance = name.replace(" ", "\\032") + "._venuebox._tcp.local."
            pointers = await dig("_venuebox._tcp.local", "PTR", lambda lines: instance in lines)
            assert instance in pointers
            addresses = await dig(f"{host}.local", "A", bool)
            assert addresses
            assert set(addresses) <= set(box.addresses)

    run(scenario())


def test_second_box_with_same_name_is_renamed() -> None:
    name, host = unique_name()

    async def scenario() -> None:
        async with (
            advertised(name, port=8443) as first,
            advertised(name, port=9443, box_id="second-box") as second,
            AsyncZeroconf() as client,
        ):
            assert first.instance_name == name
            assert second.instance_name == f"{name} (2)"
            assert second.host_name == f"{host}-2.local."
            browser = Browser(client)
            await browser.wait_for(
                lambda: (
                    browser.saw(name, ServiceStateChange.Added)
                    and browser.saw(f"{name} (2)", ServiceStateChange.Added)
                ),
                5,
            )
            await browser.cancel()
            found_first, found_second = await lookup(name, client), await lookup(f"{name} (2)", client)
            assert found_first is not None and found_second is not None
            assert (found_first.port, found_first.decoded_properties["box"]) == (8443, BOX_ID)
            assert (found_second.port, found_second.decoded_properties["box"]) == (9443, "second-box")
            assert found_second.server == f"{host}-2.local."

    run(scenario())


def test_stopped_box_says_goodbye_and_browsers_drop_it() -> None:
    name, _ = unique_name()

    async def scenario() -> None:
        async with AsyncZeroconf() as client:
            browser = Browser(client)
            box = Advertisement(name=name, box_id=BOX_ID, event_id=None, port=8443)
            await box.start()
            try:
                await browser.wait_for(lambda: browser.saw(name, ServiceStateChange.Added), 5)
            finally:
                await box.stop()
            await box.stop()  # a second stop is harmless
            await browser.wait_for(lambda: browser.saw(name, ServiceStateChange.Removed), 3)
            await browser.cancel()

    run(scenario())


def test_event_update_changes_txt_seen_by_a_fresh_lookup() -> None:
    name, _ = unique_name()

    async def scenario() -> None:
        async with advertised(name, event_id=None) as box:
            before = await lookup(name)
            assert before is not None
            assert before.decoded_properties == {
                "v": "1",
                "box": BOX_ID,
                "event": "",
                "api": "/api/v1",
                "tls": "0",
            }
            await box.update_event("final-day")
            after = await lookup(name)
            assert after is not None
            assert after.decoded_properties["event"] == "final-day"

    run(scenario())


def test_box_without_lan_address_advertises_loopback() -> None:
    name, _ = unique_name()

    async def scenario() -> None:
        async with advertised(name, interfaces=["lo"]) as box:
            assert box.addresses == ["127.0.0.1"]
            info = await lookup(name)
            assert info is not None
            assert info.parsed_addresses() == ["127.0.0.1"]

    run(scenario())


def test_only_addresses_the_tablet_api_listens_on_are_advertised() -> None:
    lan = current_addresses()
    ipv4 = [a for a in lan if ipaddress.ip_address(a).version == 4]
    assert advertised_addresses(None) == advertised_addresses("::") == (lan or ["127.0.0.1"])
    assert advertised_addresses("0.0.0.0") == (ipv4 or ["127.0.0.1"])  # no IPv6: not listened on
    assert advertised_addresses("127.0.0.1") == ["127.0.0.1"]
    assert advertised_addresses("::1") == ["::1"]
    assert advertised_addresses("192.0.2.2") == ["192.0.2.2"]


def test_a_box_listening_on_every_ipv4_address_advertises_its_ipv4_addresses_alone() -> None:
    name, _ = unique_name()
    ipv4 = [a for a in current_addresses() if ipaddress.ip_address(a).version == 4] or ["127.0.0.1"]

    async def scenario() -> None:
        async with advertised(name, listen_host="0.0.0.0") as box:
            assert box.addresses == ipv4
            info = await lookup(name)
            assert info is not None
            assert sorted(info.parsed_addresses()) == sorted(ipv4)

    run(scenario())


def test_a_box_listening_on_loopback_answers_with_loopback_alone() -> None:
    name, host = unique_name()

    async def scenario() -> None:
        async with advertised(name, listen_host="127.0.0.1") as box:
            assert box.addresses == ["127.0.0.1"]
            info = await lookup(name)
            assert info is not None
            assert info.parsed_addresses() == ["127.0.0.1"]
            if shutil.which("dig"):
                assert await dig(f"{host}.local", "A", bool) == ["127.0.0.1"]

    run(scenario())


def test_probing_waits_until_the_box_serves_and_the_names_are_known_before() -> None:
    name, host = unique_name()

    async def scenario() -> None:
        serving = asyncio.Event()
        box = Advertisement(name=name, box_id=BOX_ID, event_id=None, port=8443, listen_host="127.0.0.1")
        # Known before start: what tablet_urls list at READY.
        assert (box.host_name, box.addresses) == (f"{host}.local.", ["127.0.0.1"])
        starting = asyncio.create_task(box.start(serving))
        try:
            await asyncio.sleep(2.0)  # the name check (0.6 s) is long over
            assert not starting.done() and not box.started
            assert await lookup(name) is None  # nothing claimed while the box does not serve
            serving.set()
            await asyncio.wait_for(starting, 10)
            assert box.started
            assert await lookup(name) is not None
        finally:
            starting.cancel()
            await box.stop()

    run(scenario())
