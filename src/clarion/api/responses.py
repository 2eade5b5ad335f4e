"""The error answers of the HTTP API, declared once for the OpenAPI document.

Every route answers errors in one JSON shape (errors.py); these declarations make the document
say which statuses each route may answer, so generated clients and fuzzers (schemathesis, in
tests/test_openapi.py) can hold the server to them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

WHY = {
    400: "malformed request: unparseable JSON, a bad cursor",
    401: "missing, invalid or expired credentials (`code` says which)",
    403: "credentials without the right: scope, Origin, topic permission",
    404: "no such resource",
    409: "conflicts with the current state (a reused idempotency key, the last admin key)",
    413: "body over `CLARION_MAX_BODY`",
    422: "invalid field: `field` names it",
    429: "rate limited (with `Retry-After`) or too many live connections",
    431: "request headers over `CLARION_MAX_HEADER_BYTES` or 100 lines",
    503: "store unavailable or shutting down: nothing was stored",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses."""
    return {s: {"model": ErrorOut, "description": WHY[s]} for s in statuses}


# What any route may answer: the middleware (body and header limits), the per-address rate
# limit, validation, and a store that is down.
COMMON = errors(400, 413, 422, 429, 431, 503)
AUTHENTICATED = errors(401, 403)
