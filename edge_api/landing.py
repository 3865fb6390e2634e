"""The plain-HTTP landing page: how to trust the box, on the one port that speaks plain HTTP.

With TLS on (the default) and ``http_port`` set, a person who types the box's address into a
browser without ``https://`` lands here instead of on a connection error. The page shows the box's
name, its certificate fingerprint in groups of four (to compare with the console), the https
addresses and the certificate to download and install. It serves nothing else: every other GET is
redirected to the same path over https, and any other request is refused, so no token, code or
score ever travels over this port.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get, route
from litestar.datastructures import State
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath

from appliance.shared.fingerprint import grouped
from appliance.web.middleware import RequestIdMiddleware
from edge_api.errors import make_exception_handlers


@dataclass
class LandingInfo:
    """What the page shows; the daemon updates it when addresses change or the certificate rotates."""

    box_name: str
    fingerprint: str
    cert_path: Path
    https_urls: list[str] = field(default_factory=list)


_STYLE = """
body{font:18px/1.5 system-ui,sans-serif;margin:0;padding:1.5rem;background:#111;color:#eee;max-width:46rem}
h1{font-size:1.6rem}code,.fp{font-family:ui-monospace,monospace}
.fp{font-size:1.25rem;letter-spacing:.05em;background:#222;padding:.75rem;border-radius:.5rem;
display:block;word-spacing:.4em}
a{color:#8cf}li{margin:.4rem 0}
a.button{display:inline-block;padding:.8rem 1.2rem;border:2px solid #8cf;border-radius:.5rem;
text-decoration:none;margin:.3rem 0}
"""


def render_page(info: LandingInfo) -> str:
    name = html.escape(info.box_name)
    links = "".join(
        f'<li><a class="button" href="{html.escape(url)}/">{html.escape(url)}/</a></li>'
        for url in info.https_urls
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name}: open the judge app securely</title><style>{_STYLE}</style></head>
<body><main>
<h1>{name}</h1>
<p>This box speaks to tablets over HTTPS with its own certificate. Open one of these addresses:</p>
<ul>{links}</ul>
<h2>Is it really this box?</h2>
<p>Your browser will warn that it does not know the certificate. Before you accept it, compare its
SHA-256 fingerprint with the one the venue tech's console shows (<code>venuebox tls show</code>):</p>
<p class="fp" aria-label="certificate fingerprint">{html.escape(grouped(info.fingerprint))}</p>
<h2>Trust it once, on each tablet</h2>
<ol>
<li>Download the certificate: <a class="button" href="/box.crt" download>box.crt</a></li>
<li>iPad: open the downloaded profile in Settings, install it, then turn it on under
General &rarr; About &rarr; Certificate Trust Settings.</li>
<li>Android: Settings &rarr; Security &rarr; Encryption &amp; credentials &rarr; Install a certificate
&rarr; CA certificate, and pick <code>box.crt</code>.</li>
<li>Or accept the browser's warning after comparing the fingerprint above.</li>
</ol>
<p>If the fingerprint does not match, do not continue: tell the venue tech.</p>
</main></body></html>
"""


def _info(request: Request[Any, Any, Any]) -> LandingInfo:
    return request.app.state.landing


@get("/", include_in_schema=False, media_type="text/html")
async def landing_page(request: Request[Any, Any, Any]) -> Response[str]:
    return Response(
        render_page(_info(request)),
        media_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        },
    )


@get("/box.crt", include_in_schema=False)
async def certificate(request: Request[Any, Any, Any]) -> Response[bytes]:
    info = _info(request)
    return Response(
        info.cert_path.read_bytes(),
        media_type="application/x-x509-ca-cert",
        headers={"Content-Disposition": 'attachment; filename="box.crt"', "Cache-Control": "no-store"},
    )


@route("/{path:path}", http_method=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def elsewhere(request: Request[Any, Any, Any], path: FromPath[str]) -> Response[Any]:
    info = _info(request)
    target = info.https_urls[0] if info.https_urls else None
    if request.method in ("GET", "HEAD") and target and not path.startswith("/api/"):
        query = f"?{request.url.query}" if request.url.query else ""
        return Response(b"", status_code=308, headers={"Location": f"{target}{path}{query}"})
    raise PermissionDeniedException(
        f"this port is plain HTTP and accepts nothing; use {target or 'the https address'} (see / here)"
    )


def create_landing_app(info: LandingInfo, freeze_retry_after_s: int = 30) -> RequestIdMiddleware:
    app = Litestar(
        route_handlers=[landing_page, certificate, elsewhere],
        exception_handlers=make_exception_handlers(freeze_retry_after_s),
        request_max_body_size=1024,
        state=State({"landing": info}),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    return RequestIdMiddleware(app)
