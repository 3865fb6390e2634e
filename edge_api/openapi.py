"""The OpenAPI document as served: Litestar's (paths, parameters, responses) plus what it cannot see.

Handlers decode their bodies themselves (to tell 400 from 422 and name the failing field), so
Litestar does not know the request bodies; this module adds them from the same msgspec Structs the
handlers decode with, and adds the bearer security schemes."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

from edge_api.schemas import (
    FreezeIn,
    HeartbeatIn,
    PairIn,
    PairingCodeIn,
    PersonalRevealIn,
    RevealIn,
    SheetBatchIn,
    SheetIn,
)

REQUEST_BODIES: dict[tuple[str, str], type] = {
    ("/api/v1/pair", "post"): PairIn,
    ("/api/v1/sheets", "post"): SheetIn,
    ("/api/v1/sheets/batch", "post"): SheetBatchIn,
    ("/api/v1/heartbeat", "post"): HeartbeatIn,
    ("/admin/v1/freeze", "post"): FreezeIn,
    ("/admin/v1/pairing-codes", "post"): PairingCodeIn,
    ("/admin/v1/entries/{entry_id}/participants/reveal", "post"): RevealIn,
    ("/admin/v1/entries/{entry_id}/personal/reveal", "post"): PersonalRevealIn,
}
UNAUTHENTICATED = {"/api/v1/health", "/api/v1/pair"}


class FinishedOpenAPIPlugin(JsonRenderPlugin):
    """Serves /schema/openapi.json: Litestar's document, finished by ``finish``, encoded once."""

    def __init__(self) -> None:
        super().__init__(path="/openapi.json")
        self._encoded: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._encoded is None:
            self._encoded = msgspec.json.encode(finish(openapi_schema))
        return self._encoded


def finish(schema: dict[str, Any]) -> dict[str, Any]:
    doc = msgspec.json.decode(msgspec.json.encode(schema))  # a copy: Litestar keeps its own
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    present = [
        (path, method, kind)
        for (path, method), kind in REQUEST_BODIES.items()
        if method in doc.get("paths", {}).get(path, {})
    ]
    refs, defs = msgspec.json.schema_components(
        [kind for _, _, kind in present], ref_template="#/components/schemas/{name}"
    )
    schemas.update(defs)
    for (path, method, _), ref in zip(present, refs, strict=True):
        doc["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    admin = any(p.startswith("/admin/") for p in doc.get("paths", {}))
    scheme = "admin" if admin else "device"
    components.setdefault("securitySchemes", {})[scheme] = {
        "type": "http",
        "scheme": "bearer",
        "description": "admin token from the data dir" if admin else "device token from POST /api/v1/pair",
    }
    for path, operations in doc.get("paths", {}).items():
        if path in UNAUTHENTICATED:
            continue
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["security"] = [{scheme: []}]
    return doc
