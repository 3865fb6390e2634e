"""A schemathesis check of our own (loaded by `st run` through SCHEMATHESIS_HOOKS): every problem
body carries the request id, so a tech can match what a tablet saw with the box's log."""

from __future__ import annotations

from typing import Any

import schemathesis


def _content_type(response: Any) -> str:
    value = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
    return (value[0] if isinstance(value, list) and value else str(value)).lower()


@schemathesis.check
def problem_has_request_id(ctx: Any, response: Any, case: Any) -> None:
    if not _content_type(response).startswith("application/problem+json"):
        return
    body = response.json()
    if not isinstance(body, dict) or not body.get("request_id"):
        raise AssertionError(f"a problem body without request_id: {response.text[:200]}")
