"""One error type for the HTTP API, rendered as `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from clarion.domain import ClarionError
from clarion.responses import JSON


def field_of(loc: tuple[Any, ...]) -> str | None:
    """`("body", "users", 3)` -> `users[3]`: the name a client recognises."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def render(exc: ClarionError) -> JSON:
    """The answer for one of our errors (also for routes served outside FastAPI, api/lean.py)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if (retry := getattr(exc, "retry_after", None)) is not None:
        headers = {"Retry-After": str(retry)}
    return JSON(exc.body(), status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    """Render every error, ours and the framework's, in the one JSON shape."""

    @app.exception_handler(ClarionError)
    async def clarion_error(_: Request, exc: ClarionError) -> JSON:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSON:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = field_of(tuple(first.get("loc", ())))
        # Unparseable JSON is a bad request; anything else is a well-formed but invalid body.
        status = 400 if first.get("type") == "json_invalid" else 422
        field = None if status == 400 else field
        # pydantic prefixes a validator's own words with "Value error, ": noise to a client.
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        err = ClarionError(status, "invalid", message, field)
        return JSON(err.body(), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSON:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "error"
        )
        err = ClarionError(exc.status_code, code, str(exc.detail))
        return JSON(err.body(), status_code=exc.status_code)
