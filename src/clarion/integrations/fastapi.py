"""FastAPI: a token route on the app's own "who is logged in" dependency.

    from clarion.integrations.fastapi import token_router

    app.include_router(token_router(current_user))   # GET /clarion-token

`current_user` is any FastAPI dependency that returns the logged-in user (and raises 401 when
there is none); the route answers `{"token", "expires_in"}` for the browser's `getToken`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from clarion.integrations import TokenIssuer


class ClarionToken(BaseModel):
    token: str = Field(description="A Clarion user JWT for the browser (`sub` = the user's id)")
    expires_in: int = Field(description="Seconds until it expires; `getToken` is asked again")


def token_router(
    current_user: Callable[..., Any],
    *,
    path: str = "/clarion-token",
    issuer: TokenIssuer | None = None,
    **options: Any,
) -> APIRouter:
    """A router with `GET path` minting a token for `current_user`. Options are those of
    `TokenIssuer` (`secret`, `private_key`, `ttl`, `user_id`, `roles`, `topics`, ...)."""
    tokens = issuer or TokenIssuer(**options)
    router = APIRouter(tags=["clarion"])

    @router.get(path, response_model=ClarionToken, summary="A Clarion token for the current user")
    # A default, not Annotated[...]: annotations are strings here, and `current_user` is local.
    def clarion_token(response: Response, user: Any = Depends(current_user)) -> dict[str, Any]:
        response.headers["Cache-Control"] = "no-store"
        return tokens.issue(user)

    return router
