"""One error type for the HTTP API, rendered as `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from clarion.responses import JSON


class ClarionError(Exception):
    """An error a client can act on: HTTP status, stable code, message and offending field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class Unauthorized(ClarionError):
    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(401, "unauthorized", message)


class Forbidden(ClarionError):
    def __init__(self, message: str) -> None:
        super().__init__(403, "forbidden", message)


class NotFound(ClarionError):
    def __init__(self, message: str = "not found") -> None:
        super().__init__(404, "not_found", message)


class BadRequest(ClarionError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(400, "bad_request", message, field)


class StoreUnavailable(ClarionError):
    """The store could not commit: nothing was acknowledged."""

    def __init__(self, message: str = "store unavailable, nothing was stored") -> None:
        super().__init__(503, "unavailable", message)


def field_of(loc: tuple[Any, ...]) -> str | None:
    """`("body", "users", 3)` -> `users[3]`: the name a client recognises."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def install(app: FastAPI) -> None:
    """Render every error, ours and the framework's, in the one JSON shape."""

    @app.exception_handler(ClarionError)
    async def clarion_error(_: Request, exc: ClarionError) -> JSON:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSON(exc.body(), status_code=exc.status, headers=headers)

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
