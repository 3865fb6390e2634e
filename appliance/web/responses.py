"""JSON answers, encoded by msgspec, for the box's APIs and the receiver."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers or {},
    )
