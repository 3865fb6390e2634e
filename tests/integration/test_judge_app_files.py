"""The judge app's files as the box serves them (no browser): at /, beside the API and never in
its way, with headers that keep the page to the box's origin; and what the files promise: the
service worker keeps all of them, the version is the box's, nothing comes from the internet."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from appliance import __version__
from edge_api.webapp import STATIC_DIR
from tests.conftest import RunningBox

ROOT = Path(__file__).resolve().parents[2]


def test_the_judge_app_is_served_at_the_root_with_headers_that_keep_it_to_the_box(
    running_box: RunningBox,
) -> None:
    with running_box.client() as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="app.js">' in index.text
        policy = index.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert index.headers["x-content-type-options"] == "nosniff"
        assert index.headers["referrer-policy"] == "no-referrer"
        assert index.headers["cache-control"] == "no-cache"
        assert index.headers["x-request-id"]
        # With a pairing code in the address (the console's QR code) it is the same page.
        assert client.get("/", params={"pair": "ABCD-EFGH"}).content == index.content
        # Revalidation is cheap: the ETag answers 304 with no body.
        again = client.get("/", headers={"If-None-Match": index.headers["etag"]})
        assert again.status_code == 304 and again.content == b""

        script = client.get("/app.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert client.get("/app.css").headers["content-type"].startswith("text/css")
        assert client.get("/sw.js").status_code == 200


def test_the_app_leaves_the_api_schema_and_errors_as_they_were(running_box: RunningBox) -> None:
    with running_box.client() as client:
        missing = client.get("/no-such-file.js")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert client.get("/../venuebox.toml").status_code == 404
        assert client.get("/api/v1/no-such-thing").status_code == 404
        assert client.post("/api/v1/no-such-thing", json={}).status_code == 404
        assert client.get("/problems/frozen").text.startswith("Scoring is paused")
        health = client.get("/api/v1/health").json()
        assert health["name"] == "test-box"  # what the pairing screen shows
        paths = client.get("/schema/openapi.json").json()["paths"]
    assert "/api/v1/sheets" in paths
    assert not {"/", "/{name}"} & set(paths)  # the app's files are not part of the documented API


def test_the_service_worker_keeps_every_file_of_the_app() -> None:
    worker = (STATIC_DIR / "sw.js").read_text()
    shell = set(re.findall(r'^\s+"(/[^"]*)",$', worker, re.MULTILINE))
    files = {f"/{path.name}" for path in STATIC_DIR.iterdir() if path.name != "sw.js"}
    assert shell == files | {"/"}


def test_the_app_reports_the_box_version() -> None:
    assert f'APP_VERSION = "{__version__}";' in (STATIC_DIR / "version.js").read_text()
    assert f'const VERSION = "{__version__}";' in (STATIC_DIR / "sw.js").read_text()


def test_the_app_loads_nothing_from_outside_the_box() -> None:
    for path in STATIC_DIR.iterdir():
        text = re.sub(r'xmlns="[^"]*"', "", path.read_text())  # an SVG namespace names, never loads
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), path.name
        assert "@import" not in text, path.name


def test_the_app_ships_in_the_wheel() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "static/*" in setuptools["package-data"]["edge_api.webapp"]
    assert all(path.is_file() for path in STATIC_DIR.iterdir())  # "static/*" takes them all
