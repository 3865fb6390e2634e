"""Fixtures for the judge app in a real browser: Debian's Chromium (headless), driven by
Playwright's Python package through the system browser (no browser download), against a real
`venuebox run` daemon on a fixed loopback port, so a stopped and restarted box keeps its origin."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.conftest import RunningBox, make_box, needs_tool

# Heartbeats every 2 s, so "within one heartbeat" is quick to check.
HEARTBEAT_S = 2
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The browser tests' one skip, through the suite's rule: under CI (which installs it) they run and fail.
NEEDS_CHROMIUM = needs_tool(
    CHROMIUM is not None, "Chromium is not installed (.ci/run installs Debian's `chromium` package)"
)
# Software rendering, sRGB, no LCD text or hinting: the same page gives the same pixels every run,
# so the README's screenshot only changes when the app does.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--force-color-profile=srgb",
    "--disable-lcd-text",
    "--font-render-hinting=none",
    "--disable-partial-raster",
    "--disable-skia-runtime-opts",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread while
# it is open, and the tests after this package call asyncio.run().
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert CHROMIUM is not None, NEEDS_CHROMIUM.kwargs["reason"]
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def judge_box(tmp_path: Path) -> Iterator[RunningBox]:
    config = make_box(
        tmp_path / "box", heartbeat_interval_s=HEARTBEAT_S, device_rate_per_s=1000.0, device_burst=1000
    )
    box = RunningBox(config, port=free_port()).start()
    yield box
    box.stop()


@pytest.fixture
def shipped_box(tmp_path: Path) -> Iterator[RunningBox]:
    """A box as shipped: HTTPS with its self-signed certificate (the page is opened as by a judge
    who compared the fingerprint and accepted the browser's warning)."""
    config = make_box(
        tmp_path / "box",
        heartbeat_interval_s=HEARTBEAT_S,
        device_rate_per_s=1000.0,
        device_burst=1000,
        tls=True,
    )
    box = RunningBox(config, port=free_port()).start()
    assert box.tablet_url.startswith("https://")
    yield box
    box.stop()


@dataclass
class JudgeApp:
    """The judge app open in one browser context, with every request the page made."""

    box: RunningBox
    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.box.tablet_url)
        return f"{parts.scheme}://{parts.netloc}"

    def open(self, path: str = "/") -> JudgeApp:
        self.page.goto(self.origin + path)
        return self

    def pair(self, code: str) -> None:
        page = self.page
        page.get_by_label("Pairing code").fill(code)
        page.get_by_label("Name of this tablet").fill("Judge tablet (browser test)")
        page.get_by_role("button", name="Pair", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Your entries")

    def open_entry(self, entry_id: str) -> None:
        self.page.goto(f"{self.origin}/#/entry/{entry_id}")
        self.expect_entry(entry_id)

    def expect_entry(self, entry_id: str) -> None:
        expect(self.page.get_by_role("heading", level=1)).to_contain_text(f"Entry {entry_id}")

    def fill_scores(self, technique: str, performance: str, choreography: str, comment: str = "") -> None:
        page = self.page
        page.get_by_label("Technique", exact=True).fill(technique)
        page.get_by_label("Performance", exact=True).fill(performance)
        page.get_by_label("Choreography", exact=True).fill(choreography)
        if comment:
            page.get_by_label("Comment (optional)").fill(comment)

    def score(self, entry_id: str, technique: str, performance: str, choreography: str) -> None:
        """Score the entry on screen (which must be ``entry_id``) and submit; the app moves on."""
        self.expect_entry(entry_id)
        self.fill_scores(technique, performance, choreography)
        self.page.get_by_role("button", name="Submit sheet").click()
        expect(self.page.locator(".notice")).to_contain_text(f"Sheet for entry {entry_id} saved")

    def expect_on_the_box(self, entry_id: str) -> None:
        """The sheet just scored is on the box (the app's notice follows it there)."""
        expect(self.page.locator(".notice")).to_have_text(f"Sheet for entry {entry_id} saved on the box.")

    def kept_sheets(self) -> list[dict[str, Any]]:
        """What the tablet keeps in IndexedDB: sheet id, entry, state, the sheet it corrects, and
        ``kept``: the box's ``{seq, epoch}`` while the sheet is kept until the box's safe watermark
        passes it (None otherwise); in the order the sheets were made."""
        return self.page.evaluate(
            """() => new Promise((resolve, reject) => {
                const opened = indexedDB.open("venuebox-judge");
                opened.onerror = () => reject(opened.error);
                opened.onsuccess = () => {
                    const db = opened.result;
                    const all = db.transaction("sheets").objectStore("sheets").getAll();
                    all.onsuccess = () => {
                        db.close();
                        resolve(all.result.sort((a, b) => a.seq - b.seq).map((s) => ({
                            sheet_id: s.sheet_id, entry_id: s.entry_id, state: s.state,
                            supersedes: s.body.supersedes ?? null, kept: s.kept ?? null,
                        })));
                    };
                };
            })"""
        )

    def stored(self, key: str) -> Any:
        """A setting the app keeps in IndexedDB (its ``kv`` store): "pairing", "ledger"..."""
        return self.page.evaluate(
            """(key) => new Promise((resolve, reject) => {
                const opened = indexedDB.open("venuebox-judge");
                opened.onerror = () => reject(opened.error);
                opened.onsuccess = () => {
                    const db = opened.result;
                    const got = db.transaction("kv").objectStore("kv").get(key);
                    got.onsuccess = () => {
                        db.close();
                        resolve(got.result ?? null);
                    };
                };
            })""",
            key,
        )

    def token(self) -> str:
        """The device token the app was paired with (kept in IndexedDB), to call the API as it does."""
        return str(self.stored("pairing")["token"])

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(self.origin + "/")]

    def assert_stayed_on_the_box(self) -> None:
        """Every test's last word: no request left the box's origin and the page threw nothing."""
        assert self.foreign_requests() == []
        assert self.errors == []


@pytest.fixture
def open_app(browser: Browser) -> Iterator[Callable[..., JudgeApp]]:
    """Open the judge app on a box in a new browser context (a fresh tablet): 768x1024 portrait
    in English (Canada) by default; ``service_workers="block"`` runs it as on a box without trusted
    HTTPS; ``locale="fr-FR"`` as on a French tablet (a decimal comma)."""
    opened: list[JudgeApp] = []

    def open_app(
        box: RunningBox,
        width: int = 768,
        height: int = 1024,
        service_workers: str = "allow",
        locale: str = "en-CA",
    ) -> JudgeApp:
        context = browser.new_context(
            viewport={"width": width, "height": height},
            locale=locale,
            timezone_id="America/Toronto",
            service_workers=service_workers,  # type: ignore[arg-type]
            reduced_motion="reduce",
            # A self-signed box: the warning a judge clicks through once (after comparing the
            # fingerprint); the page is then not a secure context for a service worker.
            ignore_https_errors=box.tablet_url.startswith("https://"),
        )
        context.set_default_timeout(10_000)
        page = context.new_page()
        app = JudgeApp(box, context, page)
        # Every request of the page and of its service worker, to prove none leaves the box's origin.
        context.on("request", lambda request: app.requests.append(request.url))
        page.on("pageerror", lambda error: app.errors.append(str(error)))
        opened.append(app)
        return app.open()

    yield open_app
    for app in opened:
        app.context.close()
