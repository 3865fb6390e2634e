"""Serving the judge app's files: read once at start, sent with an ETag and headers that keep the
page to the box's own origin. One path segment only (``/app.js``), so ``/api/v1/…``, ``/schema/…``
and ``/problems/…`` answer exactly as before, and nothing here is in the OpenAPI document."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

from edge_api.responses import not_modified

STATIC_DIR = Path(__file__).resolve().parent / "static"

MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}

# The page may load and talk to its own origin only: no CDN, no font service, no analytics, and no
# inline script a stored comment could smuggle in. It may not be framed by another site.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    # Always revalidate (cheap with the ETag): a tablet must not keep an old app after an update.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def load_files(directory: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """The app's files by name (flat: the app has no subfolders), with their media type and ETag."""
    files = {}
    for path in sorted(directory.iterdir()):
        media_type = MEDIA_TYPES.get(path.suffix)
        if path.is_file() and media_type is not None:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[path.name] = StaticFile(body, media_type, etag)
    return files


def webapp_handlers(directory: Path = STATIC_DIR) -> list[HTTPRouteHandler]:
    """Route handlers serving the app: ``/`` is ``index.html``, ``/<name>`` one of its files."""
    files = load_files(directory)

    def answer(request: Request[Any, Any, Any], name: str) -> Response[bytes]:
        file = files.get(name)
        if file is None:
            raise NotFoundException(f"no such file in the judge app: {name}")
        headers = {**SECURITY_HEADERS, "ETag": file.etag}
        if not_modified(request.headers.get("if-none-match", ""), file.etag):
            return Response(content=b"", status_code=304, headers=headers)
        return Response(content=file.body, media_type=file.media_type, headers=headers)

    @get("/", include_in_schema=False, name="webapp-index")
    async def index(request: Request[Any, Any, Any]) -> Response[bytes]:
        return answer(request, "index.html")

    @get("/{name:str}", include_in_schema=False, name="webapp-file")
    async def app_file(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
        return answer(request, name)

    return [index, app_file]
