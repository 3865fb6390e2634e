"""ASGI middleware for request ids, around the box's apps and the receiver: ``RequestIdMiddleware`` gives
each request its id (in the scope, on the response), ``LogContextMiddleware`` stamps the log lines
written while serving it with that id. Plain ASGI (not a framework class) because it sits on every
request."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from appliance.shared.logs import bind_request_id, reset_request_id

REQUEST_ID_KEY = "venuebox.request_id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_of(scope: Mapping[str, Any]) -> str:
    """The request's id, made now if the middleware did not run (an error before it)."""
    # Litestar types a scope as a TypedDict (no key of ours); at run time it is the server's dict.
    fields = cast("dict[str, Any]", scope)
    rid = fields.get(REQUEST_ID_KEY)
    if rid is None:
        rid = fields[REQUEST_ID_KEY] = uuid.uuid4().hex
    return rid


class RequestIdMiddleware:
    """Echo a sane client ``X-Request-ID`` (else make one), put it in the scope and on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_ID.match(candidate):
                    rid = candidate
                break
        if rid is None:
            rid = uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = rid
        header = (b"x-request-id", rid.encode("ascii"))

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class LogContextMiddleware:
    """Bind the request id for the duration of a request, so every line logged while serving it
    carries it. Plain ASGI; it must sit inside ``RequestIdMiddleware``, which puts the id in the scope."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = bind_request_id(scope.get(REQUEST_ID_KEY))
        try:
            await self.app(scope, receive, send)
        finally:
            reset_request_id(token)
